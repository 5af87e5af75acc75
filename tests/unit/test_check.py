"""`relman check` as the deploy user on a fresh host: what nginx -t says without root, the
files shared/ must hold before the first deploy, and a root nothing was deployed to yet."""

from __future__ import annotations

import shutil
from pathlib import Path

from relman.config import load_config
from relman.releases import AppRoot
from relman.views import _nginx_check, _shared_check, _static_check, check_all
from testing.daemon import make_base_dir

# Debian 12's nginx -t run by a user who is not root: the config parses, the pid file does not
# open. The stock config cannot pass any other way for the deploy user.
NONROOT = """\
2026/11/29 14:26:46 [warn] 2001#2001: the "user" directive makes sense only if the master \
process runs with super-user privileges, ignored in /etc/nginx/nginx.conf:1
nginx: the configuration file /etc/nginx/nginx.conf syntax is ok
2026/11/29 14:26:46 [emerg] 2001#2001: open() "/run/nginx.pid" failed (13: Permission denied)
nginx: configuration file /etc/nginx/nginx.conf test failed
"""
BAD_DIRECTIVE = """\
2026/11/29 14:29:30 [emerg] 13523#13523: unknown directive "bogus" in /etc/nginx/conf.d/x.conf:1
nginx: configuration file /etc/nginx/nginx.conf test failed
"""


def test_nginx_t_as_a_user_passes_on_syntax_and_says_what_it_could_not_test() -> None:
    result = _nginx_check(1, NONROOT, root_user=False)
    assert result["ok"]
    assert "sudo nginx -t" in result["detail"]
    # As root the same failure is real.
    assert _nginx_check(1, NONROOT, root_user=True) == {
        "check": "nginx -t", "ok": False,
        "detail": 'nginx: [emerg] open() "/run/nginx.pid" failed (13: Permission denied)'}


# The same user with a TLS key only root may read: nginx loads it while parsing, so the parse
# itself stops there (seen on this host with `nginx-config --tls` and a 0600 key).
TLS_KEY = """\
2026/11/29 20:42:33 [warn] 2574#2574: the "user" directive makes sense only if the master \
process runs with super-user privileges, ignored in /etc/nginx/nginx.conf:1
2026/11/29 20:42:33 [emerg] 2574#2574: cannot load certificate key "/etc/ssl/shop/key.pem": \
BIO_new_file() failed (SSL: error:8000000D:system library::Permission denied:calling \
fopen(/etc/ssl/shop/key.pem, r) error:10080002:BIO routines::system lib)
nginx: configuration file /etc/nginx/nginx.conf test failed
"""


def test_nginx_t_as_a_user_stopped_by_a_root_only_tls_key_says_it_needs_root() -> None:
    result = _nginx_check(1, TLS_KEY, root_user=False)
    assert result == {"check": "nginx -t", "ok": True, "detail": (
        'stopped at a file only root may read (cannot load certificate key '
        '"/etc/ssl/shop/key.pem"): the test needs root: sudo nginx -t')}
    assert not _nginx_check(1, TLS_KEY, root_user=True)["ok"]


def test_nginx_t_names_the_error_not_the_last_line() -> None:
    result = _nginx_check(1, BAD_DIRECTIVE, root_user=False)
    assert not result["ok"]
    assert result["detail"] == ('nginx: [emerg] unknown directive "bogus" in '
                                "/etc/nginx/conf.d/x.conf:1")
    assert _nginx_check(0, "", root_user=False)["ok"]


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "relman.toml"
    path.write_text(f'[app]\nname = "shop"\nrepo = "/srv/git/shop"\nroot = "{tmp_path}/root"\n'
                    f'[server]\napp = "app:application"\n{extra}')
    return path


def test_shared_files_and_env_file_must_exist_before_the_first_deploy(tmp_path: Path) -> None:
    config = load_config(config_file(
        tmp_path, 'env_file = ".env"\n[build]\nshared = [".env", "media/", "local.py"]\n'))
    root = AppRoot(config.app.root)
    (root.shared).mkdir(parents=True)
    result = _shared_check(config, root)
    assert not result["ok"]
    # .env is named once (as the env_file), local.py as a shared file; media/ is the deploy's.
    assert result["detail"] == (f"build.shared: {root.shared}/local.py does not exist; create "
                                f"it first; {root.shared}/.env: server.env_file: file not found")
    (root.shared / "local.py").touch()
    (root.shared / ".env").write_text("SECRET=hunter2\nnot a variable\n")
    result = _shared_check(config, root)
    assert result["detail"] == f"{root.shared}/.env: line 2: expected KEY=VALUE"
    assert "hunter2" not in str(result)
    (root.shared / ".env").write_text("SECRET=hunter2\n")
    assert _shared_check(config, root)["ok"]


def test_a_fresh_root_passes_the_live_socket_check(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path))
    root = AppRoot(config.app.root)
    for path in (root.repo, root.releases, root.venvs, root.shared, root.run, root.state,
                 root.log):
        path.mkdir(parents=True)
    checks = {c["check"]: c for c in check_all(config)}
    assert "shared" not in checks  # nothing to check
    assert checks["live socket"]["ok"]
    assert checks["live socket"]["detail"] == "nothing deployed yet (relman deploy REF)"
    (root.run / "app.sock").symlink_to("gone.1.sock")  # deployed once, then stopped
    assert not {c["check"]: c for c in check_all(config)}["live socket"]["ok"]


def test_kind_none_has_no_live_socket_to_check(tmp_path: Path) -> None:
    """An app of processes only passes `check` without a socket, deployed or not."""
    path = tmp_path / "relman.toml"
    path.write_text(f'[app]\nname = "shop"\nrepo = "/srv/git/shop"\nroot = "{tmp_path}/root"\n'
                    '[server]\nkind = "none"\n[processes.bot]\ncommand = "python -m bot"\n')
    config = load_config(path)
    root = AppRoot(config.app.root)
    root.create()
    (root.root / "current").symlink_to("releases/20261123T031500Z-1a2b3c4")
    checks = {c["check"]: c for c in check_all(config)}
    assert checks["live socket"] == {"check": "live socket", "ok": True,
                                     "detail": 'none: server.kind = "none" (no web server)'}


def test_static_needs_directories_other_users_may_search() -> None:
    """With [static], every directory down to static/ must let nginx's workers (another
    user) through; the line names the first that does not and the fix."""
    base = make_base_dir()  # 0755 under /tmp: pytest's tmp_path is 0700
    try:
        path = base / "relman.toml"
        path.write_text(f'[app]\nname = "shop"\nrepo = "/r"\nroot = "{base}/root"\n'
                        '[server]\napp = "a:b"\n[static]\n"/static/" = "staticfiles"\n')
        config = load_config(path)
        root = AppRoot(config.app.root)
        root.create()
        assert _static_check(root) == {"check": "static", "ok": True,
                                       "detail": f"{root.static}: other users may search it"}
        assert "static" in {c["check"] for c in check_all(config)}
        base.chmod(0o750)
        result = _static_check(root)
        assert not result["ok"]
        assert result["detail"] == (f"{base} (mode 0750) keeps nginx's workers from "
                                    f"{root.static}: chmod o+x {base}")
    finally:
        shutil.rmtree(base)
