"""`relman releases --settings ID` and `--diff A B`, on manifests saved in a temp root (no
daemon: the command reads the registry)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relman.cli import main
from relman.config import load_config
from relman.releases import AppRoot, registry
from relman.releases.registry import Manifest, ReleaseState
from relman.settings import settings_of, settings_to_json

A, B, C = ("20261123T031500Z-1a2b3c4", "20261124T031500Z-5d6e7f8", "20261125T031500Z-9a8b7c6")
SECRET = "hunter2-secret"
KEY = b"k" * 32


def write_config(tmp_path: Path, name: str, server: str, processes: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f'[app]\nname = "shop"\nrepo = "/srv/git/shop.git"\n'
                    f'root = "{tmp_path / "root"}"\n[server]\n{server}\n{processes}')
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A root with three releases: A and B record different settings, C none."""
    config = write_config(tmp_path, "relman.toml",
                          f'app = "app:application"\nworkers = 2\nenv = {{ KEY = "{SECRET}" }}',
                          '[processes.worker]\ncommand = "celery worker"\ncount = 2\n')
    other = write_config(tmp_path, "other.toml",
                         'app = "app:application"\nworkers = 4\nenv = { KEY = "other" }',
                         '[processes.worker]\ncommand = "celery worker"\ncount = 3\n'
                         '[processes.beat]\ncommand = "celery beat"\n')
    root = AppRoot(tmp_path / "root")
    root.create()
    for rid, ref, path in ((A, "v1", config), (B, "v2", other), (C, "v3", None)):
        settings = settings_to_json(settings_of(load_config(path)), KEY) if path else {}
        registry.save(root, Manifest(id=rid, ref=ref, sha=rid.split("-")[1] + "0" * 33,
                                     who="t", created=time.time(), state=ReleaseState.BUILT,
                                     deps_hash="d1" if rid == A else "d2", settings=settings))
    return config


def relman(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    try:
        main(["--config", str(config), *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_settings_shows_the_recorded_tables(app: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    """--settings ID prints the release's settings as relman.toml, env values hashed."""
    code, out, _ = relman(capsys, app, "releases", "--settings", A)
    assert code == 0
    assert "[server]\nkind = \"gunicorn\"\napp = \"app:application\"" in out
    assert "workers = 2" in out
    assert "[processes.worker]\ncommand = [\"celery\", \"worker\"]\ncount = 2" in out
    assert '"KEY" = "hmac-sha256:' in out
    assert SECRET not in out


def test_settings_as_json(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json --settings ID prints the stored settings as they are in the manifest."""
    code, out, _ = relman(capsys, app, "--json", "releases", "--settings", A)
    assert code == 0
    data = json.loads(out)
    assert data["release"] == A
    assert data["settings"]["server"]["workers"] == 2
    assert data["settings"]["server"]["env"]["KEY"].startswith("hmac-sha256:")
    assert SECRET not in out


def test_settings_of_a_release_that_recorded_none(app: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A release from before settings were recorded says so (exit 0)."""
    code, out, _ = relman(capsys, app, "releases", "--settings", C)
    assert (code, out) == (0, f"release {C} has no recorded settings (built before releases "
                              "recorded them): it runs with the config's\n")
    code, out, _ = relman(capsys, app, "--json", "releases", "--settings", C)
    assert json.loads(out) == {"release": C, "settings": None}


@pytest.mark.parametrize("args", [("--settings", "20991231T000000Z-0000000"),
                                  ("--settings", "../etc"),
                                  ("--diff", A, "20991231T000000Z-0000000")])
def test_unknown_release_exits_2(app: Path, capsys: pytest.CaptureFixture[str],
                                 args: tuple[str, ...]) -> None:
    """An unknown release is UnknownRelease: one line, exit 2."""
    code, out, err = relman(capsys, app, "releases", *args)
    assert (code, out) == (2, "")
    assert err.startswith("relman: error: release ")
    assert "no such release" in err


def test_diff_lists_ref_sha_deps_then_settings(app: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--diff A B: ref, sha and deps_hash lines, then the settings lines, sorted."""
    code, out, _ = relman(capsys, app, "releases", "--diff", A, B)
    assert code == 0
    assert out.splitlines() == [
        "ref v1 -> v2",
        f"sha {A.split('-')[1]}{'0' * 33} -> {B.split('-')[1]}{'0' * 33}",
        "deps_hash d1 -> d2",
        "processes.beat added",
        "processes.worker.count 2 -> 3",
        "server.env.KEY changed",
        "server.workers 2 -> 4",
    ]
    code, out, _ = relman(capsys, app, "--json", "releases", "--diff", A, B)
    assert json.loads(out)[-1] == "server.workers 2 -> 4"
    assert SECRET not in out


def test_diff_of_a_release_with_itself(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No difference prints "no differences", and [] with --json."""
    assert relman(capsys, app, "releases", "--diff", A, A) == (0, "no differences\n", "")
    assert relman(capsys, app, "--json", "releases", "--diff", A, A) == (0, "[]\n", "")


def test_diff_with_a_release_without_settings(app: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A release that recorded no settings is named instead of a settings diff."""
    code, out, _ = relman(capsys, app, "releases", "--diff", A, C)
    assert code == 0
    assert out.splitlines()[-1] == (f"settings of {C}: not recorded (built before releases "
                                    "recorded them)")


def test_settings_and_diff_together_is_a_usage_error(app: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--settings with --diff exits 2 with a usage message."""
    code, out, err = relman(capsys, app, "releases", "--settings", A, "--diff", A, B)
    assert (code, out) == (2, "")
    assert "--settings and --diff cannot be used together" in err


def test_plain_releases_listing_still_works(app: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = relman(capsys, app, "--json", "releases")
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == [A, B, C]


def test_nginx_config_refuses_kind_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """An app with no web server has no nginx block: exit 2, saying why."""
    config = write_config(tmp_path, "none.toml", 'kind = "none"',
                          '[processes.bot]\ncommand = "python -m bot"\n')
    code, out, err = relman(capsys, config, "nginx-config")
    assert (code, out) == (2, "")
    assert 'server.kind = "none": there is no web server for nginx to proxy' in err
