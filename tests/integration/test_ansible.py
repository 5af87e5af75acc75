"""contrib/ansible with ansible-core from PyPI: deploy.yml's two plays against the simulated
fleet (testing/fleet.py) under load through its front nginx, and the relman role against
localhost into a temp prefix."""

from __future__ import annotations

import json
import os
import shlex
import shutil
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
from testing.ports import free_port
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
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="True",
               ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_SSH_ARGS="-o ControlMaster=no")
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
    """The hosts ansible-playbook's output says *task* changed (in any batch)."""
    hosts = set()
    for after in output.split(f"TASK [{task}")[1:]:
        lines = after.split("\nTASK [")[0].split("\nPLAY")[0].splitlines()
        hosts |= {line.split("[")[1].split("]")[0] for line in lines
                  if line.startswith("changed: [")}
    return hosts


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
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(("serial", "batches"), [("0", 1), ("1", 3)],
                         ids=["together", "rolling"])
def test_deploy_yml_switches_every_host_under_load(fleet, work_dir, serial, batches):
    """deploy.yml prepares the ref on all hosts (the first runs the release phase, the others
    --no-release-phase) then switches them, all at once or one at a time (relman_serial):
    every host serves it, the same release id everywhere, nothing left prepared, no failed
    request through the front nginx."""
    f = deployed_fleet(fleet)
    ref = f"ansible-a-{serial}"
    release_version(f.repo, ref)
    sockets = {f"unix:{h.root}/run/app.sock": h.uid for h in f.hosts}
    with Load(f.url, concurrency=4) as load:
        done = playbook(work_dir, fleet_inventory(f), "deploy.yml", "-e", f"relman_ref={ref}",
                        "-e", f"relman_serial={serial}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.result.sent > 0
    assert load.result.failed == 0, load.result.errors[:5]
    assert versions_by_host(f.url, sockets) == dict.fromkeys(sockets, ref)
    assert done.stdout.count("PLAY [Switch every host") == batches
    states = [live_and_prepared(h) for h in f.hosts]
    assert len({live for live, _ in states}) == 1, states
    assert {prepared for _, prepared in states} == {None}
    commands = [e for e in f.hosts[0].json("history") if e.get("release") == states[0][0]]
    assert any(e["event"] == "prepared" for e in commands), commands
    assert task_hosts(done.stdout, "Prepare on the release host") == {"h1"}
    assert task_hosts(done.stdout, "Prepare on the other hosts") == {"h2", "h3"}
    assert task_hosts(done.stdout, "Switch to the prepared release") == {"h1", "h2", "h3"}


@pytest.mark.parametrize(("sick_index", "how"), [(-1, "daemon"), (0, "daemon"),
                                                 (-1, "unreachable")],
                         ids=["another-host", "release-host", "unreachable-host"])
def test_a_host_failing_prepare_aborts_the_others_and_nobody_switches(fleet, work_dir,
                                                                      sick_index, how):
    """With one host's daemon down (its prepare exits 3) or the host unreachable (ssh exits
    255), the hosts that prepared abort their candidate (when the release host is the sick
    one, the others never prepare), the playbook fails, and every host still serves its old
    release, with no failed request through the front nginx; the daemon comes back."""
    f = deployed_fleet(fleet)
    before = [live_and_prepared(h)[0] for h in f.hosts]
    sockets = {f"unix:{h.root}/run/app.sock": h.uid for h in f.hosts}
    serving = versions_by_host(f.url, sockets)
    ref = f"ansible-b{sick_index}-{how}"
    release_version(f.repo, ref)
    sick = f.hosts[sick_index]
    inventory = fleet_inventory(f)
    sick_name = f"h{f.hosts.index(sick) + 1}"
    if how == "unreachable":
        inventory["relman"]["hosts"][sick_name]["ansible_port"] = free_port()  # no sshd
    else:
        sick.kill9()  # its servers keep serving; the next daemon adopts them
    try:
        with Load(f.url, concurrency=4) as load:
            done = playbook(work_dir, inventory, "deploy.yml", "-e", f"relman_ref={ref}")
    finally:
        if how == "daemon":
            sick.start()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "TASK [Switch to the prepared release" not in out  # the play has no host left
    assert ("UNREACHABLE!" in out) == (how == "unreachable"), out
    assert load.result.failed == 0, load.result.errors[:5]
    assert [live_and_prepared(h) for h in f.hosts] == [(live, None) for live in before]
    prepared_on = [h for h in f.hosts if h is not sick] if sick_index == -1 else []
    for host in f.hosts:
        history = host.json("history")
        prepared = [e["release"] for e in history
                    if e["event"] == "prepared" and e.get("ref") == ref]
        assert len(prepared) == (host in prepared_on), (host.name, history[-5:], out)
        aborted = [e for e in history
                   if e["event"] == "prepare_aborted" and e.get("release") in prepared]
        assert len(aborted) == len(prepared), (host.name, history[-5:], out)
        if prepared:
            assert "aborted " + prepared[0] in out  # the playbook says so
    assert versions_by_host(f.url, sockets) == serving


def role_vars(base: Path, user: str, **extra: Any) -> dict[str, Any]:
    """The role's variables for an install under *base* (paths, user, app), no systemd."""
    return {
        "relman_source_archive": str(base / "relman.tar.gz"),
        "relman_source_dir": str(base / "src"), "relman_prefix_venv": str(base / "opt/relman"),
        "relman_bindir": str(base / "bin"), "relman_unitdir": str(base / "systemd"),
        "relman_logrotatedir": str(base / "logrotate.d"), "relman_mandir": str(base / "man"),
        "relman_packages": [], "relman_user": user, "relman_user_home": str(base / "home"),
        "relman_user_comment": FLEET_MARK,  # testing.fleet.remove_user removes only those
        "relman_app_name": "sample", "relman_app_root": str(base / "app"),
        "relman_config_dir": str(base / "etc"),
        "relman_config": {"app": {"repo": str(base / "repo")},
                          "server": {"kind": "gunicorn", "app": "app:server",
                                     "socket_group": "www-data", "env_file": ".env"},
                          "health": {"path": "/health", "timeout": 30}},
        "relman_shared_files": [".env"], "relman_manage_service": False, **extra}


def recap(output: str) -> str:
    return output.rpartition("PLAY RECAP")[2]


def test_the_role_installs_relman_the_unit_config_and_app_root_again_unchanged(work_dir):
    """install.yml with the relman role on localhost into a temp prefix: contrib/install.sh
    from a `git archive` of this checkout, the deploy user (in www-data), the unit with its
    User= drop-in, the app's config (0640, the user's group), `relman init` and `relman
    check` as that user. A second run changes nothing; a config with an unknown key fails
    with relman's one-line error and leaves the installed file as it was."""
    need_root("the role makes the deploy user")
    base = work_dir
    user = f"relman-ans-{base.name.rsplit('-', 1)[-1][:8]}"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o",
                    str(base / "relman.tar.gz"), "HEAD"], check=True, timeout=60)
    inventory = {"relman": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become_method": "su"}}}}  # root may su to anyone; sudo may be missing

    def install(**extra: Any) -> subprocess.CompletedProcess[str]:
        (base / "vars.json").write_text(json.dumps(role_vars(base, user, **extra)))
        return playbook(base, inventory, "install.yml", "-e", f"@{base / 'vars.json'}")

    try:
        first = install()
        assert first.returncode == 0, first.stdout + first.stderr
        version = subprocess.run([str(base / "bin/relman"), "--version"], check=True,
                                 capture_output=True, text=True).stdout
        assert version.startswith("relman, version")
        unit = (base / "systemd/relman@.service").read_text()
        assert f"ExecStart={base}/bin/relman --app %i daemon" in unit
        dropin = (base / "systemd/relman@sample.service.d/relman-user.conf").read_text()
        assert f"User={user}\nGroup={user}\n" in dropin
        assert f"Environment=RELMAN_CONFIG={base}/etc/sample.toml" in dropin
        config = base / "etc/sample.toml"
        assert (config.stat().st_mode & 0o777, config.group()) == (0o640, user)
        assert (base / "app/state").owner() == user
        env_file = base / "app/shared/.env"
        assert (env_file.owner(), env_file.stat().st_mode & 0o777) == (user, 0o600)
        assert (base / "man/man1/relman.1").exists()

        again = install()
        assert again.returncode == 0, again.stdout + again.stderr
        assert "changed=0" in recap(again.stdout), recap(again.stdout)

        before = config.read_bytes()
        bad = role_vars(base, user)["relman_config"] | {"swap": {"drain_timout": 3}}
        broken = install(relman_config=bad)
        assert broken.returncode != 0
        assert "swap.drain_timout: unknown key" in broken.stdout, broken.stdout
        assert config.read_bytes() == before
    finally:
        remove_user(user)
