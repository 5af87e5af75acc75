"""relman as a real service (issue 5): the systemd unit passes `systemd-analyze verify`, and
`relman ssh-command` guards a real deploy as the forced command of a real, private sshd."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.git import release_version
from testing.session_output import session_answers
from testing.sshd import PrivateSshd, login_name, require_tool
from testing.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "relman@.service"
# Where README step 1 puts the console script (a symlink into the /opt/relman venv).
INSTALLED_RELMAN = "/usr/local/bin/relman"
# The console script of the relman under test: what that symlink leads to.
VENV_RELMAN = Path(sys.executable).with_name("relman")


# --- A. the systemd unit ---------------------------------------------------------------------

def verify_unit(analyze: str, text: str, directory: Path) -> tuple[int, list[str], list[str]]:
    """`systemd-analyze verify` on *text* installed as relman@demo.service in *directory*.

    Returns (exit status, lines about the unit, other lines). verify loads units from the
    directory of its argument first, so each call gets a directory of its own. Parse problems
    ("Unknown key ..., ignoring", "Failed to parse ..., ignoring") leave the exit status at 0:
    every line naming our unit counts as an error. Lines that do not (the environment: no
    system bus, another installed unit's warnings) are only shown.
    """
    directory.mkdir()
    unit = directory / "relman@demo.service"
    unit.write_text(text)
    # --man=no: Documentation= is checked against man/ below; --recursive-errors=no: the
    # status reflects this unit, not whatever nginx.service this machine has installed.
    done = subprocess.run([analyze, "verify", "--man=no", "--recursive-errors=no", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    ours = [line for line in lines if unit.name in line]
    return done.returncode, ours, [line for line in lines if unit.name not in line]


def test_systemd_unit_verifies(tmp_path):
    """The unit has no unknown section, key or value, and its commands exist and parse.

    ExecStart names /usr/local/bin/relman, where README step 1 links it; this machine
    need not have relman installed there, and a test must not write into /usr/local. So the
    copy runs the venv's `relman` console script instead: a real executable of the relman
    under test, with the unit's own arguments, which are then also run through the CLI.
    """
    analyze = require_tool("systemd-analyze", "systemd")
    text = UNIT.read_text()
    exec_start = re.search(r"^ExecStart=(\S+)(.*)$", text, re.MULTILINE)
    assert exec_start, "no ExecStart= line"
    assert exec_start[1] == INSTALLED_RELMAN, exec_start[0]
    assert VENV_RELMAN.is_file(), f"{VENV_RELMAN} missing: pip install -e . into the venv"
    assert not set(str(VENV_RELMAN)) & set('" %'), "a path the unit cannot hold as is"
    copy = text.replace(f"ExecStart={INSTALLED_RELMAN} ", f"ExecStart={VENV_RELMAN} ", 1)
    assert copy != text

    code, ours, other = verify_unit(analyze, copy, tmp_path / "unit")
    report = "systemd-analyze verify:\n" + "\n".join(ours + other)
    assert not ours, report
    assert code == 0, report

    # The arguments are a valid relman command line (%i is the instance, here "demo").
    argv = shlex.split(exec_start[2].replace("%i", "demo"))
    assert argv == ["--app", "demo", "daemon"]
    helped = subprocess.run([str(VENV_RELMAN), *argv, "--help"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "Usage: relman daemon" in helped.stdout, helped.stdout

    # Documentation= names the man pages this repository ships (and the wheel installs).
    pages = re.findall(r"man:([\w.]+)\((\d)\)", re.search(r"^Documentation=(.*)$", text,
                                                         re.MULTILINE)[1])
    assert pages == [("relman", "1"), ("relman.toml", "5")]
    for name, section in pages:
        assert (REPO / "man" / f"{name}.{section}").is_file(), (name, section)


def test_systemd_unit_delegates_its_cgroup():
    """The unit hands its cgroup to the deploy user (Delegate=yes), keeps the servers alive
    through a daemon crash (KillMode=process), and does not make /sys/fs/cgroup read-only
    (ProtectControlGroups= would, delegated subtree included, on systemd 252)."""
    keys = dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert keys["Delegate"] == "yes"
    assert keys["KillMode"] == "process"
    assert keys.get("ProtectControlGroups", "no") == "no"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("KillMode=process", "KillMod=process"), "Unknown key"),  # exit 0, a warning only
        (("Type=notify", "Type=notifyy"), "Failed to parse service type"),  # exit 0 too
        ((f"ExecStart={VENV_RELMAN} ", "ExecStart=/nonexistent/relman "), "not executable"),
    ],
    ids=["unknown-key", "bad-value", "missing-executable"],
)
def test_systemd_unit_check_catches_errors(tmp_path, change, says):
    """The check above fails on real unit errors, including those verify exits 0 for."""
    analyze = require_tool("systemd-analyze", "systemd")
    good = UNIT.read_text().replace(f"ExecStart={INSTALLED_RELMAN} ",
                                    f"ExecStart={VENV_RELMAN} ", 1)
    bad = good.replace(*change)
    assert bad != good
    _code, ours, other = verify_unit(analyze, bad, tmp_path / "unit")
    assert any(says in line for line in ours), (ours, other)


# --- B. ssh-command behind a real sshd ----------------------------------------------------------

@pytest.fixture
def sshd(tmp_path) -> Iterator[PrivateSshd]:
    base = tmp_path / "sshd"
    base.mkdir()
    server = PrivateSshd(base)
    server.start()
    yield server
    server.stop()


def forced_command(config: Path, *global_options: str, who_as: str | None = None) -> str:
    """README's `command="relman --app shop ssh-command"`, with the venv's console script (an
    ssh session's PATH does not hold the venv) and --config (no file in /etc/relman); with
    *who_as*, `ssh-command --as WHO_AS`."""
    return " ".join([str(VENV_RELMAN), "--config", str(config), *global_options, "ssh-command",
                     *(["--as", who_as] if who_as else [])])


def stream(argv: list[str], timeout: float = 180) -> tuple[int, list[tuple[str, bool]]]:
    """Run *argv*, reading stdout line by line: (exit status, [(line, ssh still running)])."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        lines = [(line.rstrip("\n"), proc.poll() is None) for line in proc.stdout]
        return proc.wait(10), lines
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_ssh_command_over_real_ssh(make_app, app_repo, sshd):
    """Allowed commands work through sshd's forced command, with a leading `relman --app
    APP` as README types them; a deploy streams its steps while it runs, and the history
    records the deploy and rollback with the SSH client address and the key's --as name."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    key = sshd.authorize(forced_command(app.config), "ci")
    json_key = sshd.authorize(forced_command(app.config, "--json"), "ci-json")
    (v1,) = app.json("releases")

    status = sshd.run(key, "relman status")
    assert status.returncode == 0, (status.stderr, sshd.log_tail())
    assert v1["id"] in status.stdout
    releases = sshd.run(key, "relman", "releases")
    assert releases.returncode == 0, releases.stderr
    assert v1["id"] in releases.stdout

    release_version(app_repo, "v2")
    code, lines = stream(sshd.argv(key, "relman deploy v2"))
    text = "\n".join(line for line, _ in lines)
    assert code == 0, f"{text}\n--- daemon ---\n{app.log_tail()}\n--- sshd ---\n{sshd.log_tail()}"
    steps = [line for line, _ in lines if line.startswith("[")]
    for step in ("fetched", "built", "healthy", "switched", "drained"):
        assert any(line.startswith(f"[{step}]") for line in steps), (step, text)
    assert lines[-1][0].startswith("deployed v2 as "), text
    assert lines[0][1], "the first step arrived while the deploy still ran: streamed"
    v2 = lines[-1][0].removeprefix("deployed v2 as ")

    # README's command for a login, through a key whose forced command says who it is.
    ci_key = sshd.authorize(forced_command(app.config, who_as="ci-deploy"), "ci-deploy")
    back = sshd.run(ci_key, "relman --app sample rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"rolled back to {v1['id']}" in back.stdout
    assert app.json("status")["live"] == v1["id"]

    expected_who = f"{login_name()} via ssh from 127.0.0.1"
    ci_who = f"ci-deploy ({login_name()}) via ssh from 127.0.0.1"
    history = sshd.run(key, "relman history")
    assert history.returncode == 0, history.stderr
    assert re.search(rf"deployed\s+{v2}\s+{re.escape(expected_who)}$", history.stdout,
                     re.MULTILINE), history.stdout
    # The same through a key whose forced command adds --json (man relman: global options
    # belong in the forced command).
    entries = json.loads(sshd.run(json_key, "relman history").stdout)
    assert json.loads(sshd.run(key, "relman history --json").stdout) == entries
    events = [(e["event"], e.get("release"), e["who"]) for e in entries]
    assert events[0][:2] == ("deployed", v1["id"])
    assert "via ssh" not in events[0][2], "v1 was deployed locally"
    assert events[1:] == [("deployed", v2, expected_who),
                          ("rolled_back", v1["id"], ci_who)], events


REFUSED = "relman: error: ssh-command: {!r} is not allowed; allowed: abort, deploy, history, " \
          "logs, ps, releases, rollback, session, status, switch"
OTHER_CONFIG = "relman: error: ssh-command: --config {}: not this key's config file (the " \
               "forced command names it)"
OTHER_APP = "relman: error: ssh-command: --app other: this key serves app sample"
OPTION = "relman: error: ssh-command: {!r} is not allowed before the command: the forced " \
         "command fixes relman's options (allowed: --app and --config naming this key's app, " \
         "--json)"


def test_ssh_command_refuses_over_real_ssh(make_app, base_dir, sshd):
    """Anything but the allowed commands (run and scale among the refused), shell syntax,
    --config/--app naming another app and other options before the command are refused with
    exit 2 and one line, and nothing runs: no file appears or goes, no job reaches the
    daemon."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    key = sshd.authorize(forced_command(app.config), "ci")
    canary = base_dir / "canary"
    canary.mkdir()
    pwned = base_dir / "pwned"
    other = base_dir / "other.toml"
    other.write_text(app.config.read_text().replace(str(base_dir / "sample"),
                                                    str(base_dir / "other")))
    before = (app.json("releases"), app.json("history"))

    one_line = {
        "relman prune": REFUSED.format("relman prune"),
        "relman restart": REFUSED.format("relman restart"),
        f"relman run -- touch {pwned}": REFUSED.format(f"relman run -- touch {pwned}"),
        "relman scale worker=3": REFUSED.format("relman scale worker=3"),
        f"rm -rf {canary}": REFUSED.format(f"rm -rf {canary}"),
        f"touch {pwned}": REFUSED.format(f"touch {pwned}"),
        "id": REFUSED.format("id"),
        f"relman --config {other} status": OTHER_CONFIG.format(other),
        f"relman status --config {other}": OTHER_CONFIG.format(other),
        f"relman deploy v1 --config={other}": OTHER_CONFIG.format(other),
        "relman deploy --app other v1": OTHER_APP,
        "relman --app other rollback": OTHER_APP,
        "relman --version": OPTION.format("--version"),
        "relman --help deploy v1": OPTION.format("--help"),
        "relman 'status": "relman: error: ssh-command: cannot parse SSH_ORIGINAL_COMMAND",
        "": REFUSED.format("(no command)"),
    }
    for command, message in one_line.items():
        done = sshd.run(key, command) if command else sshd.run(key)
        assert (done.returncode, done.stdout, done.stderr.splitlines()) == (2, "", [message]), (
            command, done)

    # Shell syntax is not shell syntax here: words go to click, which rejects the extras,
    # in one line.
    for command in (f"relman deploy v1; touch {pwned}", f"relman status && touch {pwned}",
                    f"relman releases | touch {pwned}", f"relman status $(touch {pwned})"):
        done = sshd.run(key, command)
        assert done.returncode == 2, (command, done)
        assert "unexpected extra argument" in done.stderr, (command, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr

    assert canary.is_dir(), "rm -rf ran"
    assert not pwned.exists(), "a command after the allowed one ran"
    assert not (base_dir / "other").exists(), "--config was honoured"
    assert (app.json("releases"), app.json("history")) == before
    assert app.json("status")["live"] == before[0][0]["id"]


def test_session_over_real_ssh_runs_allowed_lines_and_refuses_the_rest(make_app, app_repo,
                                                                        base_dir, sshd):
    """`relman session` (what a fleet coordinator runs on each host) through the forced
    command: each line is checked as ssh-command checks its command and answered in JSON
    ended by a done line with its exit code; a refused line runs nothing and the session goes
    on; the key's --as label is kept; the session ends with its stdin."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    key = sshd.authorize(forced_command(app.config, who_as="ci-fleet"), "ci-fleet")
    other = base_dir / "other.toml"
    pwned = base_dir / "pwned"
    lines = ["status", "relman --json deploy v2 --build-only", "prune", "session",
             f"--config {other} status", f"status $(touch {pwned})", "releases", "logs -f"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    done = subprocess.run(sshd.argv(key, "relman --json session"), input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr, sshd.log_tail())
    answers = session_answers(done.stdout)
    assert [a[-1]["exit"] for a in answers] == [0, 0, 2, 2, 2, 2, 0, 2], answers
    assert answers[0][-2]["live"] == app.json("status")["live"]
    assert any(e.get("step") == "built" for e in answers[1]), answers[1]
    built = answers[1][-2]["release"]
    assert answers[2][0]["error"]["message"] == REFUSED.removeprefix(
        "relman: error: ").replace("ssh-command:", "session:").format("prune").replace(
        "session, ", "").replace("logs, ", "")
    assert "'session' is not allowed" in answers[3][0]["error"]["message"]
    assert answers[4][0]["error"]["message"] == OTHER_CONFIG.removeprefix(
        "relman: error: ").replace("ssh-command:", "session:").format(other)
    assert "unexpected extra argument" in answers[5][0]["error"]["message"]
    assert built in [r["id"] for r in answers[6][-2]]
    assert "'logs -f' is not allowed" in answers[7][0]["error"]["message"]
    assert not pwned.exists()
    history = app.json("history")
    assert history[-1]["event"] == "built"
    assert history[-1]["who"].startswith("ci-fleet ("), history[-1]


def test_dropped_ssh_session_does_not_abort_the_deploy(make_app, app_repo, sshd):
    """The ssh client dies mid-deploy (a dropped connection): the daemon owns the job, so
    `relman status` shows it running and the release goes live all the same."""
    app = make_app(release={"commands": ["sleep 3"]})
    app.relman("deploy", "v1", check=True)
    key = sshd.authorize(forced_command(app.config), "ci")
    release_version(app_repo, "v2")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    client = subprocess.Popen(sshd.argv(key, "relman deploy v2"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              env=env)
    try:
        assert client.stdout is not None
        for line in client.stdout:  # until the release phase runs
            if line.startswith("[built]"):
                break
        client.kill()  # the connection drops, as when a laptop closes
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    job = app.json("status")["job"]
    assert job is not None, "the deploy is still running"
    assert job["job"] == "deploy"
    wait_until(lambda: app.json("status")["job"] is None, timeout=60, what="the deploy")
    live = next(r for r in app.json("releases") if r["live"])
    assert live["ref"] == "v2"
