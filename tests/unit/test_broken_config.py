"""An invalid relman.toml still names its app root (lenient_root); the commands that need only
the root use it with a warning, and those that need the config exit 2 (issue point 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relman import logs
from relman.cli import main
from relman.config import load_config
from relman.config_search import hoist_global_options, lenient_root
from relman.errors import ConfigError
from relman.releases import AppRoot
from relman.releases import history as audit

GOOD = '[app]\nname = "shop"\nrepo = "/r"\nroot = "{root}"\n'


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "bogus = 1\n",
        GOOD + "keep_releases = 0\n",
        GOOD + '[serve]\nkind = "x"\n',
        GOOD + '[server]\nkind = "gunicorn"\n',
        '[app]\nname = "shop"\nroot = "{root}"\n',
        GOOD + "[server]\nworkers = \n",
        "[server]\nworkers = 4 4\n\n" + GOOD,
        "[app]\nname = 'shop'\n  root='{root}'   # where it lives\nrepo = \n",
        '[ app ]  # the app\nroot = "{root}"\n[server\n',
        'app.root = "{root}"\napp.name = "shop"\n[server\n',
        GOOD + 'root = "{root}"\n',
    ],
    ids=["unknown-key", "bad-value", "unknown-table", "cross-key-rule", "missing-key",
         "toml-error-after", "toml-error-before", "literal-string-and-comment",
         "spaced-header", "dotted-key", "same-root-twice"],
)
def test_root_is_found_in_an_invalid_config(tmp_path: Path, text: str) -> None:
    """The root comes from the parsed TOML whatever else is wrong, else from a root line
    under [app] (or a top-level app.root) when the file is not TOML at all."""
    path = tmp_path / "relman.toml"
    path.write_text(text.format(root=tmp_path))
    with pytest.raises(ConfigError):
        load_config(path)
    assert lenient_root(path) == tmp_path


@pytest.mark.parametrize(
    "text",
    [
        '[app]\nroot = "srv/shop"\nbogus = 1\n',
        "[app]\nroot = 5\n",
        '[app]\nroot = ["{root}"]\n',
        '[app]\nname = "shop"\nbogus = 1\n',
        '[app]\nroot = "{root}/absent"\nbogus = 1\n',
        '[server]\nroot = "{root}"\n[app\n',
        '[[app]]\nroot = "{root}"\n',
        '[[app]]\nroot = "{root}"\nname = \n',
        GOOD + 'root = "/"\n',
        'root = "{root}"\n[app\n',
        "",
    ],
    ids=["relative", "not-a-string", "an-array", "missing", "not-a-directory",
         "other-table", "array-of-tables", "array-of-tables-toml-error", "two-roots",
         "top-level-root", "empty"],
)
def test_no_root_unless_one_absolute_existing_directory(tmp_path: Path, text: str) -> None:
    """No guess: a root that is missing, relative, not a string, not a directory, outside
    [app] or ambiguous gives None, and the command fails with the config error."""
    path = tmp_path / "relman.toml"
    path.write_text(text.format(root=tmp_path))
    assert lenient_root(path) is None


def test_no_root_from_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    """A missing file, or a directory, gives None."""
    assert lenient_root(tmp_path / "absent.toml") is None
    assert lenient_root(tmp_path) is None


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """relman ARGS in this process: (exit status, stdout, stderr). Logging is left as it
    was: pointed at capsys's stream, which is closed after the test, structlog's cached
    loggers would fail every later test that logs."""
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(logs, "configure", lambda **_kw: None)
            main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """An app root with one history entry, and a config naming it with an unknown key."""
    root = AppRoot(tmp_path / "shop")
    root.create()
    audit.record(root.history, "deployed", app="shop", release="r1", ref="v1")
    path = tmp_path / "relman.toml"
    path.write_text(GOOD.format(root=root.root) + "bogus = 1\n")
    return path


@pytest.mark.parametrize(("args", "needle"), [
    (["history"], "deployed"), (["releases"], "no releases yet"), (["--json", "releases"], "[]")])
def test_commands_that_read_the_root_warn_and_work(
        capsys: pytest.CaptureFixture[str], broken: Path, args: list[str], needle: str) -> None:
    """releases and history read the root the invalid file names: exit 0, one warning line
    naming file, key and reason on stderr, stdout as usual."""
    code, out, err = run(capsys, "--config", str(broken), *args)
    assert code == 0, err
    assert needle in out
    assert err.splitlines() == [err.strip()]
    assert err.startswith(f"relman: warning: {broken}: app.bogus: unknown key")
    assert "would not be loaded" in err


def test_ssh_command_warns_and_works(capsys: pytest.CaptureFixture[str], broken: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A forced command's history works too."""
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "relman history")
    code, out, err = run(capsys, "--config", str(broken), "ssh-command")
    assert (code, "deployed" in out, err.startswith("relman: warning:")) == (0, True, True)


def test_daemon_commands_reach_the_root_it_names(capsys: pytest.CaptureFixture[str],
                                                 broken: Path) -> None:
    """status goes to the control socket under that root: with no daemon there, exit 3,
    after the warning."""
    code, _out, err = run(capsys, "--config", str(broken), "status")
    assert code == 3
    assert err.startswith(f"relman: warning: {broken}: app.bogus")
    assert f"{broken.parent}/shop/run/relman.ctl" in err


@pytest.mark.parametrize("args", [["check"], ["init"], ["nginx-config"], ["daemon"],
                                  ["--json", "check"]])
def test_commands_that_need_the_config_exit_2(capsys: pytest.CaptureFixture[str],
                                              broken: Path, args: list[str]) -> None:
    """check, init, nginx-config and daemon need the config itself: exit 2 with the error
    (file, key, reason), no warning."""
    code, out, err = run(capsys, "--config", str(broken), *args)
    assert code == 2
    assert "warning" not in err
    assert f"{broken}: app.bogus: unknown key" in out + err


def test_no_root_found_is_the_config_error(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """When the root cannot be found, a root-only command exits 2 with the config error."""
    path = tmp_path / "relman.toml"
    path.write_text('[app]\nname = "shop"\nrepo = "/r"\nroot = "shop"\n')
    code, _out, err = run(capsys, "--config", str(path), "history")
    assert code == 2
    assert err.startswith(f"relman: error: {path}: app.root: must be an absolute path")
    assert "warning" not in err


@pytest.mark.parametrize(("args", "hoisted"), [
    (["history", "--json"], ["--json", "history"]),
    (["status", "--json", "--config", "/x.toml"], ["--json", "--config", "/x.toml", "status"]),
    (["logs", "-f", "--app=shop"], ["--app=shop", "logs", "-f"]),
    (["--json", "status"], ["--json", "status"]),
    (["deploy", "--", "--json"], ["deploy", "--", "--json"]),  # an argument after --
    (["deploy", "v1", "--config"], ["deploy", "v1", "--config"]),  # click says what's missing
    (["run", "python", "manage.py", "dumpdata", "--json"],  # the program's own options
     ["run", "python", "manage.py", "dumpdata", "--json"]),
    (["run", "--json", "./tool", "--app", "x"], ["--json", "run", "./tool", "--app", "x"]),
    (["--app", "run", "run", "tool", "--config=y"], ["--app", "run", "run", "tool", "--config=y"]),
])
def test_global_options_go_before_the_command(args, hoisted):
    """--json, --config and --app may follow the command (DESIGN section 7), but not in the
    command line `relman run` runs."""
    assert hoist_global_options(args) == hoisted


def test_json_after_the_command_is_the_global_option(capsys: pytest.CaptureFixture[str],
                                                     broken: Path) -> None:
    """`relman history --json` prints JSON, as `relman --json history` does."""
    code, out, _err = run(capsys, "history", "--json", "--config", str(broken))
    assert code == 0
    assert [e["event"] for e in json.loads(out)] == ["deployed"]
