"""The simulated fleet (testing/fleet.py) works end to end: three hosts, each a user with its
own daemon, deploy over ssh through their forced command, and a front nginx over their
sockets serves every host with no failed request while they deploy the next ref in turn."""

from __future__ import annotations

import pytest

from testing.fleet_cli import versions_by_host
from testing.git import release_version
from testing.load import Load

pytestmark = pytest.mark.integration


def test_three_hosts_deploy_over_ssh_and_swap_in_turn_under_load(fleet):
    f = fleet(3)
    assert len({h.name for h in f.hosts}) == 3
    for host in f.hosts:
        done = f.ssh(host, "deploy", "v1")
        assert done.returncode == 0, f"{host.name}: {done.stdout}{done.stderr}\n{host.log_tail()}"
        assert host.json("status")["live"] is not None
    sockets = {f"unix:{h.root}/run/app.sock": h.uid for h in f.hosts}
    assert versions_by_host(f.url, sockets) == dict.fromkeys(sockets, "v1")

    release_version(f.repo, "v2")
    with Load(f.url, concurrency=4) as load:
        for host in f.hosts:
            done = f.ssh(host, "deploy", "v2")
            assert done.returncode == 0, f"{host.name}: {done.stdout}{done.stderr}"
    result = load.result
    assert result.sent > 0
    assert result.failed == 0, result.errors[:5]
    assert versions_by_host(f.url, sockets) == dict.fromkeys(sockets, "v2")
    # Each host's daemon, run as its user, owns its servers; who deployed is its user via ssh.
    for host in f.hosts:
        last = host.json("history", "--event", "deployed")[-1]
        assert last["ref"] == "v2"
        assert last["who"].startswith(f"{host.name} via ssh"), last
