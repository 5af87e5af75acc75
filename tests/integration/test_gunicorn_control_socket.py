"""gunicorn's control socket (25.1 and later bind one by default, at one path per user):
two apps of one user each run gunicorn without one (issue 11, point 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_deploy import get

pytestmark = pytest.mark.integration


def test_two_apps_of_one_user_share_no_gunicorn_control_socket(make_app, base_dir):
    """Two daemons of one user, two roots, both serving with gunicorn: neither gunicorn binds
    (or fails to bind) a control socket, and none appears under $XDG_RUNTIME_DIR or ~."""
    home, runtime = base_dir / "home", base_dir / "xdg-runtime"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    apps = [make_app(name, start=False) for name in ("shop", "blog")]
    for app in apps:
        app.env.update(env)
        app.start()
        app.relman("deploy", "v1", check=True)

    for app in apps:
        root = Path(app.config.with_suffix(""))
        assert get(root / "run" / "app.sock").startswith("sample v1")
        (release,) = app.json("releases")
        server_log = (root / "log" / f"{release['id']}.log").read_text()
        assert "Booting worker" in server_log, server_log
        assert "ontrol socket" not in server_log, server_log
        assert "ontrol server" not in server_log, server_log
    assert list(runtime.iterdir()) == []
    assert not (home / ".gunicorn").exists()
