"""The simulated fleet (testing/fleet.py) works end to end: three hosts, each a user with its
own daemon, deploy over ssh through their forced command, and a front nginx over their
sockets serves every host with no failed request while they deploy the next ref in turn."""

from __future__ import annotations

import urllib.request

import psutil
import pytest

from testing.git import release_version
from testing.load import Load
from testing.waiting import wait_until

pytestmark = pytest.mark.integration


def served(url: str) -> tuple[str, str, int]:
    """(socket the front nginx used, the sample app's version, the worker's uid) for one
    GET /; the sample app answers "sample VERSION pid PID release ID"."""
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        words = response.read().decode().split()
        return response.headers["X-Upstream"], words[1], psutil.Process(int(words[3])).uids()[0]


def versions_by_host(url: str, hosts: dict[str, int]) -> dict[str, str]:
    """Each upstream socket's version, asking until all *hosts* (socket -> the uid its
    server must run as) have answered."""
    seen: dict[str, str] = {}

    def all_seen() -> bool:
        upstream, version, uid = served(url)
        assert uid == hosts[upstream], f"{upstream} answered from uid {uid}"
        seen[upstream] = version
        return len(seen) == len(hosts)

    wait_until(all_seen, timeout=30, interval=0, what=f"all {hosts} hosts to answer")
    return seen


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
