"""The CLI's numbers as people type them (issue 11): a negative count or a duration that is
nan, inf or garbage is a usage error, one line naming the option; and a bug in the CLI
names a crash log only once it has written it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relman.cli.failures import error_handler
from relman.releases import AppRoot
from relman.releases import history as audit
from tests.unit.test_broken_config import GOOD, run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An app root with three history entries, and its config."""
    root = AppRoot(tmp_path / "shop")
    root.create()
    for n in (1, 2, 3):
        audit.record(root.history, "deployed", app="shop", release=f"r{n}", ref=f"v{n}")
    path = tmp_path / "relman.toml"
    path.write_text(GOOD.format(root=root.root))
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["history", "-n", "-5"], "'-n' / '--limit': -5"),
     (["history", "--limit=-1"], "'-n' / '--limit': -1"),
     (["history", "-n", "many"], "'-n' / '--limit'"),
     (["history", "--since", "nan"], "'--since': nan is not a finite number"),
     (["history", "--since", "inf"], "'--since': inf is not a finite number"),
     (["history", "--since", "-inf"], "'--since': -inf is not a finite number"),
     (["history", "--since", "-1"], "'--since': -1 is not a finite number above 0"),
     (["history", "--since", "0"], "'--since': 0 is not a finite number above 0"),
     (["history", "--since", "yesterday"], "'--since': 'yesterday' is not a valid float"),
     (["logs", "-n", "-1"], "'-n' / '--lines': -1"),
     (["scale", "worker=-1"], "'worker=-1': the count must be a whole number"),
     (["scale", "worker=nan"], "'worker=nan': the count must be a whole number")],
    ids=["history-n-negative", "history-limit-negative", "history-n-garbage", "since-nan",
         "since-inf", "since-minus-inf", "since-negative", "since-zero", "since-garbage",
         "logs-n-negative", "scale-negative", "scale-nan"])
def test_bad_numbers_are_one_line_usage_errors(capsys: pytest.CaptureFixture[str],
                                               config: Path, args: list[str],
                                               needle: str) -> None:
    """A count below 0, or a duration that is not a finite number above 0: exit 2 and one
    line that names the option, not click's usage block and not a silent "everything"."""
    code, out, err = run(capsys, "--config", str(config), *args)
    assert (code, out) == (2, "")
    assert err.splitlines() == [err.strip()], err
    assert err.startswith(f"relman: error: relman {args[0]}: "), err
    assert needle in err, err


def test_click_usage_errors_are_one_line_and_json_with_json(
        capsys: pytest.CaptureFixture[str], config: Path) -> None:
    """click's own usage errors (an unknown option or command) are one relman line too, and
    JSON with --json."""
    code, _out, err = run(capsys, "--config", str(config), "history", "--bogus")
    assert (code, err) == (2, "relman: error: relman history: No such option '--bogus'.\n")
    code, out, err = run(capsys, "--config", str(config), "--json", "history", "-n", "-5")
    assert (code, err) == (2, "")
    assert '"code": "usage"' in out
    assert "'-n' / '--limit': -5" in out


@pytest.mark.parametrize(("args", "releases"),
                         [(["-n", "0"], []), (["-n", "1"], ["r3"]), (["-n", "2"], ["r2", "r3"]),
                          (["-n", "9"], ["r1", "r2", "r3"]),
                          (["--since", "1"], ["r1", "r2", "r3"])])
def test_history_counts_and_hours(capsys: pytest.CaptureFixture[str], config: Path,
                                  args: list[str], releases: list[str]) -> None:
    """-n 0 shows nothing (not everything), -n N the last N; --since takes fractions."""
    code, out, err = run(capsys, "--config", str(config), "history", *args)
    assert code == 0, err
    shown = [word for line in out.splitlines() for word in line.split() if word[:1] == "r"]
    assert shown == releases, out


def crash(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """A bug inside the CLI's error funnel: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exited, error_handler(as_json=False):
        raise ZeroDivisionError("a bug")
    return int(str(exited.value.code)), capsys.readouterr().err


def test_crash_log_in_the_state_home(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug: exit 70, one line naming $XDG_STATE_HOME/relman/crash.log, which holds it."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, err = crash(capsys)
    log = tmp_path / "state" / "relman" / "crash.log"
    assert (code, err) == (70, f"relman: internal error (a bug): see {log}\n")
    assert "ZeroDivisionError: a bug" in log.read_text()


def unwritable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME under a plain file: nothing can be made there, even by root (a read-only home,
    or /nonexistent for a system user, as the deploy user may have)."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


def test_crash_log_falls_back_to_tmp_without_a_home(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME not writable: the crash log is <tmp>/relman-crash-<uid>.log, made 0600, and the
    line names it; a second bug appends to it."""
    unwritable_home(tmp_path, monkeypatch)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    code, err = crash(capsys)
    log = tmp_path / "tmp" / f"relman-crash-{os.getuid()}.log"
    assert (code, err) == (70, f"relman: internal error (a bug): see {log}\n")
    assert log.stat().st_mode & 0o777 == 0o600
    crash(capsys)
    assert log.read_text().count("ZeroDivisionError: a bug") == 2


def test_no_crash_log_anywhere_prints_the_traceback(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No place takes the log (and the shared one is a link someone else planted): the
    traceback goes to stderr and no path is named."""
    unwritable_home(tmp_path, monkeypatch)
    (tmp_path / "tmp").mkdir()
    planted = tmp_path / "tmp" / f"relman-crash-{os.getuid()}.log"
    planted.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)
    code, err = crash(capsys)
    assert code == 70
    assert "ZeroDivisionError: a bug" in err
    assert "see " not in err
    assert err.splitlines()[-1] == ("relman: internal error (a bug): no crash log could be "
                                    "written; the traceback is above")
    assert not (tmp_path / "elsewhere").exists()


def test_a_fifo_planted_as_the_shared_crash_log_is_refused_without_waiting(
        tmp_path: Path) -> None:
    """A FIFO at <tmp>/relman-crash-<uid>.log (anyone may make one in /tmp) is not a crash
    log: write_crash_log() returns None at once instead of blocking in open() until
    someone reads the FIFO (a CLI hanging on its own bug)."""
    (tmp_path / "file").write_text("")
    (tmp_path / "tmp").mkdir()
    fifo = tmp_path / "tmp" / f"relman-crash-{os.getuid()}.log"
    os.mkfifo(fifo, 0o666)
    env = {**os.environ, "HOME": str(tmp_path / "file" / "home"), "TMPDIR": str(fifo.parent)}
    env.pop("XDG_STATE_HOME", None)
    code = ("import os; from relman.cli.failures import write_crash_log; "
            "print(write_crash_log('trace', os.environ))")
    # The timeout only ends a child stuck in open(): no time is measured.
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "None\n"), done.stderr
