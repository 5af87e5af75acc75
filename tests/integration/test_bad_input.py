"""Bad input: one clear line, the documented exit code, no traceback, the live release
untouched (issue 2)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from relman.client import request
from relman.errors import UsageError
from testing.daemon import RELMAN, write_config
from testing.git import commit_dated, release_version
from testing.waiting import wait_until
from tests.integration.test_deploy import get


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    # The failing step's own output is shown indented under the error; relman's never is.
    assert not any(line.startswith("Traceback") for line in (proc.stderr + proc.stdout)
                   .splitlines())
    first = proc.stderr.splitlines()[0]
    assert first.startswith(("relman: error:", "Error:", "Usage:")), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.fixture
def live_app(make_app):
    """A daemon with v1 live."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    return app


def root_of(app) -> Path:
    return Path(app.config.with_suffix(""))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\nbogus = 1\n', "app.bogus"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\nkeep_releases = "five"\n',
         "app.keep_releases"),
        ('[app]\nname = "x"\nrepo = "/r"\n', "app.root"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "relative/path"\n', "app.root"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\n[server]\nsocket_mode = "0777"\n',
         "server.socket_mode"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\n[health]\n'
         'nginx_url = "http://127.0.0.1:99999/"\n', "health.nginx_url"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\n[health]\n'
         'nginx_url = "http://[::1"\n', "health.nginx_url"),
        ('[app]\nname = "x"\nrepo = "/r"\nroot = "/srv/x"\n[build]\nshared = ["."]\n',
         "build.shared"),
    ],
    ids=["unknown-key", "wrong-type", "missing-required", "bad-path", "socket-0777",
         "url-port", "url-ipv6", "shared-dot"],
)
def test_bad_config_is_one_line_exit_2(tmp_path, text, key):
    """A bad config names the file and the key, exits 2, and shows no traceback."""
    config = tmp_path / "relman.toml"
    config.write_text(text)
    proc = subprocess.run([*RELMAN, "--config", str(config), "releases"],
                          capture_output=True, text=True, check=False)
    assert_clean_error(proc, 2, str(config), key)
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [("health", 'nginx_url = "http://127.0.0.1:99999/"', "health.nginx_url"),
     ("health", 'nginx_url = "http://[::1"', "health.nginx_url"),
     ("build", 'shared = ["."]', "build.shared")],
    ids=["url-port", "url-ipv6", "shared-dot"],
)
def test_bad_config_under_a_live_app(live_app, app_repo, table, line, key):
    """A config whose value would only fail mid-deploy is refused at load: the daemon's
    reload (SIGHUP) keeps the old config, and `check` exits 2 naming the key; a deploy
    warns in one line naming it and runs on the daemon's last good config (issue 12,
    point 6: emergencies with a broken config)."""
    text = live_app.config.read_text()
    live_app.config.write_text(text.replace(f"[{table}]\n", f"[{table}]\n{line}\n")
                               if f"[{table}]\n" in text else f"{text}\n[{table}]\n{line}\n")
    live_app.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config.re" in live_app.log_tail(5), timeout=10, what="the reload")
    assert "config.reload_failed" in live_app.log_tail(5)
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v1")
    assert_clean_error(live_app.relman("check"), 2, str(live_app.config), key)
    release_version(app_repo, "v2")
    proc = live_app.relman("deploy", "v2")
    assert proc.returncode == 0, proc.stderr
    assert f"relman: warning: {live_app.config}: {key}" in proc.stderr
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v2")
    assert live_app.proc.poll() is None


@pytest.mark.parametrize(
    ("ref", "reason"),
    [("no-such-tag", "no such branch, tag or commit"),
     ("--upload-pack=touch /tmp/pwned", "must not start with '-'"),
     ("v1..v2", "'..'")],
    ids=["missing", "dash", "dotdot"],
)
def test_bad_ref_is_refused(live_app, ref, reason):
    """A bad ref is refused with exit 2; the live release keeps serving."""
    proc = live_app.relman("deploy", "--", ref)
    assert_clean_error(proc, 2, reason)
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v1")
    assert len(live_app.json("releases")) == 1
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    ("date", "shown"),
    [("253402300800 +0000", "'253402300800'"), ("-5 +0000", "'(unreadable)'")],
    ids=["year-10000", "before-1970"],
)
def test_commit_date_no_release_id_can_hold(live_app, app_repo, date, shown):
    """A commit dated in year 10000 (or before 1970, which git cannot print) makes no
    release id: exit 2 naming the ref and the date, nothing built, v1 still serves."""
    (app_repo / "VERSION").write_text("odd\n")
    commit_dated(app_repo, "an odd date", date, tag="odd-date")
    proc = live_app.relman("deploy", "odd-date")
    assert_clean_error(proc, 2, "ref 'odd-date'", shown, "years 1970 to 9999")
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v1")
    assert [r["state"] for r in live_app.json("releases")] == ["built"]
    assert live_app.json("status")["health"]["healthy"]
    assert "Traceback" not in live_app.log_tail(200)


def _raw_request(path: Path, line: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(line + b"\n")
        return json.loads(sock.makefile("rb").readline())


def test_malformed_control_requests_are_usage_errors(live_app):
    """Requests whose args or client is not an object, or JSON nested 200,000 deep, get a
    usage error (exit 2 on the client), never an internal error; the daemon keeps answering
    and v1 keeps serving."""
    ctl = root_of(live_app) / "run/relman.ctl"
    for command, args, client in [("deploy", [1], {}), ("status", [1], {}),
                                  ("rollback", {}, "x"), ("deploy", "v1", {"user": "ci"})]:
        with pytest.raises(UsageError) as info:
            request(ctl, command, args, client)
        assert info.value.exit_code == 2, info.value.message
        assert "must be an object" in info.value.message
    for depth in (200_000, 5_000):
        answer = _raw_request(ctl, b'{"command": "status", "args": ' + b"[" * depth
                              + b"]" * depth + b"}")
        assert answer["type"] == "error"
        assert (answer["error"]["exit_code"], answer["error"]["code"]) == (2, "usage")
    assert live_app.json("status")["health"]["healthy"]
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v1")
    assert live_app.proc.poll() is None
    assert "Traceback" not in live_app.log_tail(200)


def _assert_failed_deploy(app, proc, *needles: str) -> None:
    assert_clean_error(proc, 1, *needles)
    assert get(root_of(app) / "run/app.sock").startswith("sample v1"), "v1 still serves"
    releases = app.json("releases")
    assert releases[-1]["state"] == "failed"
    assert releases[0]["live"]
    assert app.json("status")["health"]["healthy"]
    assert app.json("history")[-1]["event"] == "deploy_failed"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../outside"], ids=["absolute", "up"])
def test_tree_with_a_link_out_of_the_release(live_app, app_repo, target):
    """A committed symlink that leads out of the release (tar's data filter refuses it) fails
    the deploy with exit 1 naming the link; v1 serves."""
    (app_repo / "escape").symlink_to(target)
    release_version(app_repo, "v2")
    proc = live_app.relman("deploy", "v2")
    _assert_failed_deploy(live_app, proc, "escape: a link", "git archive")


def test_requirements_that_fail_to_install(live_app, app_repo):
    """Uninstallable requirements: exit 1 with the installer's last lines; v1 serves."""
    release_version(app_repo, "v2", extra={"requirements.txt":
                                           "gunicorn==27.0.1\nrelman-no-such-package-xyz==9\n"})
    proc = live_app.relman("deploy", "v2")
    _assert_failed_deploy(live_app, proc, "installing dependencies failed",
                          "relman-no-such-package-xyz")


def test_app_that_fails_to_import(live_app, app_repo):
    """An app that raises at import: exit 1 with the server's last log lines; v1 serves."""
    release_version(app_repo, "v2", extra={"FAIL_IMPORT": "yes\n"})
    proc = live_app.relman("deploy", "v2")
    _assert_failed_deploy(live_app, proc, "exited", "failing at import")


def test_health_check_that_never_passes(make_app, app_repo):
    """A health path answering 503 fails the deploy after health.timeout; v1 serves."""
    app = make_app(health={"path": "/health", "timeout": 3})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"UNHEALTHY": "yes\n"})
    proc = app.relman("deploy", "v2")
    _assert_failed_deploy(app, proc, "not healthy within 3s", "503")
    assert "Booting worker" in proc.stderr, "the server's last log lines are shown"


def test_a_slow_booting_app_needs_only_a_longer_health_timeout(make_app, app_repo):
    """An app that takes 4 s to import fails a 2 s health.timeout (its log shown, v1
    serving), and deploys with a longer one: the limit is the user's, not a fixed 30 s."""
    app = make_app(health={"path": "/health", "timeout": 2})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"BOOT_DELAY": "4\n"})
    proc = app.relman("deploy", "v2")
    _assert_failed_deploy(app, proc, "not healthy within 2s")
    assert "Booting worker" in proc.stderr
    app.config.write_text(app.config.read_text().replace("timeout = 2\n", "timeout = 30\n"))
    app.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=10, what="the reload")
    app.relman("deploy", "v2", check=True)
    assert get(root_of(app) / "run/app.sock").startswith("sample v2")


def test_release_phase_failure(make_app, app_repo):
    """A failing release command (a migration) aborts the deploy; v1 serves."""
    app = make_app(release={"commands": ["python -c \"import os; "
                                         "raise SystemExit(0 if open('VERSION').read()"
                                         ".strip() == 'v1' else 3)\""]})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    proc = app.relman("deploy", "v2")
    _assert_failed_deploy(app, proc, "release.commands", "exited 3")


def test_second_deploy_while_one_runs_exits_4(make_app, app_repo):
    """A second deploy during a running one exits 4 naming who holds the lock and since when."""
    app = make_app(build={"commands": ["sleep 3"]})
    first = threading.Thread(target=app.relman, args=("deploy", "v1"))
    first.start()
    wait_until(lambda: app.json("status")["job"] is not None, timeout=30,
               what="the first deploy to start")
    proc = app.relman("deploy", "v1")
    first.join()
    assert_clean_error(proc, 4, "deploy v1", "since")
    waited = app.relman("deploy", "--wait", "v1")
    assert waited.returncode == 0, waited.stderr


def test_daemon_not_running_exits_3(make_app):
    """Without a daemon the CLI exits 3 and says how to start it."""
    app = make_app(start=False)
    proc = app.relman("deploy", "v1")
    assert_clean_error(proc, 3, "not running", "relman daemon")


def test_unknown_release_for_rollback(live_app):
    """Rolling back to a release that does not exist is a usage error."""
    proc = live_app.relman("rollback", "20990101T000000Z-deadbee")
    assert_clean_error(proc, 2, "no such release")


def test_no_rollback_target(live_app):
    """With one release there is nothing to roll back to: exit 1, v1 still serves."""
    proc = live_app.relman("rollback")
    assert_clean_error(proc, 1, "no known-good release")
    assert get(root_of(live_app) / "run/app.sock").startswith("sample v1")


def test_dropped_client_does_not_abort_the_deploy(make_app, app_repo):
    """Killing the CLI mid-deploy (a dropped SSH session) leaves the deploy running to the end."""
    app = make_app(build={"commands": ["sleep 2"]})
    client = subprocess.Popen([*RELMAN, "--config", str(app.config), "deploy", "v1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until(lambda: app.json("status")["job"] is not None, timeout=30,
               what="the deploy to start")
    client.kill()
    client.wait()
    wait_until(lambda: app.json("status")["live"], timeout=60, what="the deploy to finish")
    assert get(root_of(app) / "run/app.sock").startswith("sample v1")


def test_internal_error_is_exit_70_without_traceback(tmp_path):
    """A bug prints one line pointing at the crash log and exits 70."""
    config = write_config(tmp_path / "relman.toml", name="x", repo=tmp_path,
                          root=tmp_path / "root", server={"app": "app:server"})
    code = ("import sys; from relman import cli, views; "
            "views.release_rows = lambda root: 1/0; "
            f"sys.argv=['relman','--config','{config}','releases']; cli.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"XDG_STATE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          check=False)
    assert proc.returncode == 70
    assert "internal error" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ZeroDivisionError" in (tmp_path / "relman" / "crash.log").read_text()


def test_daemon_internal_error_names_a_crash_log_that_holds_it(make_app, app_repo):
    """A real bug path in the daemon (state/run.json is a directory, so taking the candidate
    raises IsADirectoryError): exit 70, one line naming <root>/log/relman-crash.log, which
    exists and holds the traceback, and the unit relman@<config name>, not relman@APP."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    root = root_of(app)
    (root / "state" / "run.json").unlink()
    (root / "state" / "run.json").mkdir()

    proc = app.relman("deploy", "v2")
    crash_log = root / "log" / "relman-crash.log"
    assert_clean_error(proc, 70, f"see {crash_log} and its log",
                       f"journalctl -u relman@{app.config.stem}")
    assert "relman@APP" not in proc.stderr
    text = crash_log.read_text()
    assert text.startswith("--- ")
    assert "control request 'deploy'" in text
    assert "Traceback (most recent call last)" in text
    assert "IsADirectoryError" in text
    assert crash_log.stat().st_mode & 0o137 == 0, oct(crash_log.stat().st_mode)

    app.relman("deploy", "v2")  # a second bug is appended
    assert crash_log.read_text().count("IsADirectoryError: ") == 2 * text.count(
        "IsADirectoryError: ")
