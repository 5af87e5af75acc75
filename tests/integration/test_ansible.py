"""contrib/ansible with ansible-core from PyPI: deploy.yml's two plays against the simulated
fleet (testing/fleet.py) under load through its front nginx, and the relman role against
localhost into a temp prefix."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import make_base_dir
from testing.fleet import FLEET_MARK, Fleet, Host, remove_user
from testing.git import release_version
from testing.load import Load
from testing.needs import need, need_root
from tests.integration.test_fleet_sim import versions_by_host

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "contrib" / "ansible"
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def ansible_env(base: Path) -> dict[str, str]:
    """What ansible-playbook needs here: writable dirs of its own, no colours, no ssh
    ControlPersist master left behind (it would outlive the test by a minute)."""
    need(PLAYBOOK.exists(), "ansible-playbook is not in the test venv",
         "install the test extras (pip install -e '.[test]')")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    for name in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_REMOTE_TEMP"):
        path = base / name.lower()
        path.mkdir(exist_ok=True)
        env[name] = str(path)
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_FORCE_COLOR="0")
    return env


def playbook(base: Path, inventory: dict[str, Any], name: str, *args: str,
             ) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook -i INVENTORY contrib/ansible/NAME ARGS`; its output is kept in
    base/NAME.log for a failing test's message."""
    path = base / "inventory.json"
    path.write_text(json.dumps(inventory))
    done = subprocess.run([str(PLAYBOOK), "-i", str(path), str(ANSIBLE / name), *args],
                          capture_output=True, text=True, timeout=900, check=False,
                          stdin=subprocess.DEVNULL, env=ansible_env(base), cwd=base)
    (base / f"{name}.log").write_text(done.stdout + done.stderr)
    return done


def fleet_inventory(f: Fleet) -> dict[str, Any]:
    """The fleet's hosts as the group `relman`: each its user and the sshd's port, the
    fleet's ssh argv as ssh executable, key and common args (its own known_hosts)."""
    ssh, *options = f.config.ssh
    key = options[options.index("-i") + 1]
    del options[options.index("-i"):options.index("-i") + 2]
    hosts = {f"h{n}": {"ansible_host": "127.0.0.1", "ansible_port": h.port,
                       "ansible_user": h.name}
             for n, h in enumerate(f.hosts, start=1)}
    return {"relman": {"hosts": hosts, "vars": {
        "ansible_ssh_executable": ssh, "ansible_ssh_private_key_file": key,
        "ansible_ssh_common_args": shlex.join(options)}}}


def task_hosts(output: str, task: str) -> set[str]:
    """The hosts ansible-playbook's output says *task* changed."""
    _, _, after = output.partition(f"TASK [{task}")
    lines = after.split("\nTASK [")[0].split("\nPLAY")[0].splitlines()
    return {line.split("[")[1].split("]")[0] for line in lines if line.startswith("changed: [")}


def live_and_prepared(host: Host) -> tuple[str | None, str | None]:
    status = host.json("status")
    return status["live"], status["prepared"]


def deployed_fleet(fleet) -> Fleet:
    """fleet(3) with a live release on every host (the session's hosts may be fresh)."""
    f = fleet(3)
    for host in f.hosts:
        if live_and_prepared(host)[0] is None:
            done = f.ssh(host, "deploy", "v1")
            assert done.returncode == 0, f"{host.name}: {done.stdout}{done.stderr}"
    return f


@pytest.fixture
def work_dir():
    base = make_base_dir("relman-ansible-")
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_deploy_yml_switches_every_host_under_load(fleet, work_dir):
    """deploy.yml prepares the ref on all hosts (the first runs the release phase, the others
    --no-release-phase) then switches them: every host serves it, the same release id
    everywhere, nothing left prepared, no failed request through the front nginx."""
    f = deployed_fleet(fleet)
    release_version(f.repo, "ansible-a")
    sockets = {f"unix:{h.root}/run/app.sock": h.uid for h in f.hosts}
    with Load(f.url, concurrency=4) as load:
        done = playbook(work_dir, fleet_inventory(f), "deploy.yml", "-e", "relman_ref=ansible-a")
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.result.sent > 0
    assert load.result.failed == 0, load.result.errors[:5]
    assert versions_by_host(f.url, sockets) == dict.fromkeys(sockets, "ansible-a")
    states = [live_and_prepared(h) for h in f.hosts]
    assert len({live for live, _ in states}) == 1, states
    assert {prepared for _, prepared in states} == {None}
    commands = [e for e in f.hosts[0].json("history") if e.get("release") == states[0][0]]
    assert any(e["event"] == "prepared" for e in commands), commands
    assert task_hosts(done.stdout, "Prepare on the release host") == {"h1"}
    assert task_hosts(done.stdout, "Prepare on the other hosts") == {"h2", "h3"}
    assert task_hosts(done.stdout, "Switch to the prepared release") == {"h1", "h2", "h3"}


def test_a_host_failing_prepare_aborts_the_others_and_nobody_switches(fleet, work_dir):
    """With one host's daemon down (its prepare exits 3), the hosts that prepared abort
    their candidate, the playbook fails, and every host still serves its old release, with
    no failed request through the front nginx; the daemon comes back afterwards."""
    f = deployed_fleet(fleet)
    before = [live_and_prepared(h)[0] for h in f.hosts]
    sockets = {f"unix:{h.root}/run/app.sock": h.uid for h in f.hosts}
    serving = versions_by_host(f.url, sockets)
    release_version(f.repo, "ansible-b")
    sick = f.hosts[-1]
    sick.kill9()  # its servers keep serving; the next daemon adopts them
    try:
        with Load(f.url, concurrency=4) as load:
            done = playbook(work_dir, fleet_inventory(f), "deploy.yml",
                            "-e", "relman_ref=ansible-b")
    finally:
        sick.start()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "PLAY [Switch" not in out
    assert load.result.failed == 0, load.result.errors[:5]
    assert [live_and_prepared(h) for h in f.hosts] == [(live, None) for live in before]
    for host in f.hosts[:-1]:
        history = host.json("history")
        prepared = [e["release"] for e in history
                    if e["event"] == "prepared" and e.get("ref") == "ansible-b"]
        assert len(prepared) == 1, (host.name, history[-5:], out)
        aborted = [e for e in history
                   if e["event"] == "prepare_aborted" and e.get("release") == prepared[0]]
        assert aborted, (host.name, history[-5:], out)
    assert "aborted " + prepared[0] in out  # the playbook says so
    assert versions_by_host(f.url, sockets) == serving
