"""A simulated fleet on one machine (issue 10, "Tests"): each host is a unix user
(relman-h1-TAG, relman-h2-TAG, ..., TAG this session's) with its own home, app root,
`relman.toml` and daemon run as that user; one private sshd on a loopback port serves them
all, one client key logging in to each with the forced command
`relman --config ~/relman.toml ssh-command` (relman by its absolute path: sshd's PATH
lacks it); a front nginx load-balances over the hosts'
run/app.sock.

Root only (it makes users). The relman the hosts run is `make install`ed once under the
fleet's base dir (the test venv, under /work or /root, may not be theirs to read); the
sample app's repo lives there too, marked safe for each host user's git. Each user's uv
cache starts as a copy of the tests' (UV_CACHE_DIR), so the venv builds download nothing.
Users are made with the comment FLEET_MARK, and only a user bearing it is reused or
removed; `deploy` and every other account are left alone.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relman.config_fleet import FleetConfig
from relman.fleet.ssh import ssh_argv
from testing.cpu_share import CpuShares
from testing.daemon import SERVICE_PATH, make_base_dir, terminate, write_config
from testing.git import make_app_repo
from testing.leftovers import kill_leftover_servers
from testing.nginx import PrivateNginx
from testing.sshd import PrivateSshd
from testing.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
FLEET_MARK = "relman simulated fleet host (testing/fleet.py)"
USER_PREFIX = "relman-h"
# nginx's workers, and the group of each host's app socket they connect to.
WEB_GROUP = "www-data"


class FleetError(RuntimeError):
    pass


def install_relman(base: Path) -> Path:
    """`make install INSTALL_ROOT=base/install` (umask 022): a relman every user may run;
    the console script's path."""
    root = base / "install"
    done = subprocess.run(["bash", "-c", 'umask 022 && exec make -s "$@"', "make",
                           "--no-print-directory", "-C", str(REPO), "install",
                           f"INSTALL_ROOT={root}"],
                          capture_output=True, text=True, timeout=600, check=False)
    relman = root / "usr" / "local" / "bin" / "relman"
    if done.returncode != 0 or not relman.exists():
        raise FleetError(f"make install failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return relman


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise FleetError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def ensure_user(name: str, home: Path) -> pwd.struct_passwd:
    """The unix user *name* (ours: FLEET_MARK) with *home*, in WEB_GROUP, not locked."""
    try:
        found = pwd.getpwnam(name)
    except KeyError:
        _run("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
             "--comment", FLEET_MARK, "--groups", WEB_GROUP, "--user-group", name)
    else:
        if found.pw_gecos != FLEET_MARK:
            raise FleetError(f"user {name} exists and is not a simulated host ({FLEET_MARK!r})")
        _run("usermod", "--home", str(home), name)
    # sshd refuses a locked account ("!" in shadow); "*" has no password and is not locked.
    _run("usermod", "--password", "*", name)
    user = pwd.getpwnam(name)
    home.mkdir(mode=0o755)
    os.chown(home, user.pw_uid, user.pw_gid)
    home.chmod(0o755)  # nginx's workers go through it to <home>/app/run/app.sock
    return user


def remove_user(name: str) -> None:
    """userdel *name*, only if it bears FLEET_MARK."""
    with contextlib.suppress(KeyError):
        if pwd.getpwnam(name).pw_gecos == FLEET_MARK:
            subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)


def copy_cache(source: Path, target: Path) -> None:
    """A copy of the tests' uv cache, which another test worker's uv may be writing: its
    lock and temporary entries are left out, and a file that vanishes while the tree is
    copied is skipped (uv renames its temporary files into place)."""
    try:
        shutil.copytree(source, target, symlinks=True,
                        ignore=shutil.ignore_patterns(".lock", ".tmp*"))
    except shutil.Error as e:
        lost = [(src, why) for src, _dst, why in e.args[0]
                if not isinstance(why, str) or "No such file or directory" not in why]
        if lost:
            raise


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for directory, dirs, files in os.walk(path):
        os.chown(directory, uid, gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


@dataclass
class Host:
    """One simulated host: a user, its home and app root, and its daemon."""
    name: str  # the user
    uid: int
    gid: int
    home: Path
    relman_bin: Path
    port: int = 0  # the sshd's
    enter: str = ""  # shell words its daemon runs before its exec (testing/cpu_share.py)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.home / "app"

    @property
    def config(self) -> Path:
        return self.home / "relman.toml"

    @property
    def destination(self) -> str:
        """The [fleet] hosts entry: user@127.0.0.1:PORT."""
        return f"{self.name}@127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "daemon.log"

    def env(self) -> dict[str, str]:
        """What the unit gives the daemon (README walk-through): systemd's PATH, the user."""
        return {"PATH": ":".join(SERVICE_PATH), "HOME": str(self.home), "USER": self.name,
                "LOGNAME": self.name, "SHELL": "/bin/sh", "LANG": "C.UTF-8",
                "UV_CACHE_DIR": str(self.home / ".cache" / "uv"),
                "UV_PYTHON_DOWNLOADS": "never"}

    def _as_user(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid,
                "extra_groups": [grp.getgrnam(WEB_GROUP).gr_gid], "cwd": self.home,
                "env": self.env()}

    def relman(self, *args: str, check: bool = False, timeout: float = 180
               ) -> subprocess.CompletedProcess[str]:
        """`relman --config ~/relman.toml ARGS` run locally as the host's user."""
        done = subprocess.run([str(self.relman_bin), "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False, **self._as_user())
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: relman {' '.join(args)} exited "
                                 f"{done.returncode}\n{done.stdout}{done.stderr}\n"
                                 f"--- daemon log ---\n{self.log_tail()}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.relman("--json", *args, check=True).stdout)

    def start(self) -> None:
        """Start the daemon as the user (the unit's ExecStart) and wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", f'{self.enter}exec "$@"', "sh", str(self.relman_bin),
                 "--config", str(self.config), "daemon"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **self._as_user())

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: daemon exited {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            return self.relman("status", timeout=10).returncode == 0

        wait_until(answers, timeout=30, what=f"{self.name}'s daemon to answer")

    def stop(self) -> None:
        """SIGTERM the daemon this harness started: it stops the app servers gracefully."""
        terminate(self.proc)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_tail(self, n: int = 60) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def front_block(listen: str, hosts: list[Host]) -> str:
    """nginx round-robin over the hosts' live sockets; X-Upstream names the one used."""
    servers = "".join(f"    server unix:{h.root}/run/app.sock max_fails=0;\n" for h in hosts)
    return (f"upstream relman_fleet {{\n{servers}}}\n\n"
            f"server {{\n    listen {listen};\n    server_name _;\n"
            "    location / {\n        proxy_pass http://relman_fleet;\n"
            "        proxy_set_header Host $host;\n"
            "        add_header X-Upstream $upstream_addr always;\n    }\n}\n")


@dataclass
class Fleet:
    """The first n hosts of a SimulatedFleet, the [fleet] config reaching them, and a front
    nginx over them."""
    hosts: list[Host]
    config: FleetConfig
    nginx: PrivateNginx
    repo: Path

    @property
    def url(self) -> str:
        return self.nginx.url

    def ssh_argv(self, host: Host, *args: str) -> list[str]:
        return ssh_argv(self.config, host.destination, args)

    def ssh(self, host: Host, *args: str, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        """`relman ARGS` on *host* over ssh, through its forced command."""
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return subprocess.run(self.ssh_argv(host, *args), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, env=env, check=False)


class SimulatedFleet:
    """Hosts made on demand and kept for the session (fleet(n) returns the first n);
    close() stops what it started and removes the users it made."""

    def __init__(self, base: Path, host_cpu: float = 0.0) -> None:
        self.base = base
        # each host's CPU share in cores (0: they share the machine)
        self.cpu = CpuShares(base.name.rsplit("-", 1)[-1], host_cpu) if host_cpu else None
        self.hosts: list[Host] = []
        self.fleets: dict[int, Fleet] = {}
        self.relman_bin = install_relman(self.base)
        self.repo = make_app_repo(self.base / "repo")
        (self.base / "sshd").mkdir(mode=0o755)
        self.sshd = PrivateSshd(self.base / "sshd")
        self.sshd.start()
        self.key = self.sshd.new_key("fleet-ci")

    def _add_host(self) -> Host:
        # relman-h1-<tag>: the tag (the base dir's random part) keeps sessions run at once
        # (CI, helpers, the bench) apart; at most 32 characters, as useradd wants.
        name = f"{USER_PREFIX}{len(self.hosts) + 1}-{self.base.name.rsplit('-', 1)[-1][:8]}"
        home = self.base / "home" / name
        home.parent.mkdir(mode=0o755, exist_ok=True)
        user = ensure_user(name, home)
        host = Host(name, user.pw_uid, user.pw_gid, home, self.relman_bin, self.sshd.port)
        if self.cpu is not None:
            host.enter = self.cpu.enter(self.cpu.make(name, user.pw_uid, user.pw_gid))
        self.hosts.append(host)
        # git refuses a repository another user owns ("dubious ownership") unless it is safe.
        (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {self.repo}\n"
                                         f"\tdirectory = {self.repo}/.git\n")
        cache = Path(os.environ.get("UV_CACHE_DIR", Path.home() / ".cache" / "relman-tests-uv"))
        if cache.is_dir():
            copy_cache(cache, home / ".cache" / "uv")
        _chown_tree(home, host.uid, host.gid)
        write_config(host.config, name="sample", repo=self.repo, root=host.root,
                     server={"kind": "gunicorn", "app": "app:server", "workers": 2,
                             "socket_group": WEB_GROUP},
                     health={"path": "/health", "timeout": 30})
        self.sshd.authorize_user(
            name, f"{host.enter}exec {self.relman_bin} --config ~/relman.toml ssh-command",
            self.key)
        host.relman("init", check=True)
        host.start()
        return host

    def __call__(self, n: int) -> Fleet:
        """The first *n* hosts, their daemons running, and a front nginx over them."""
        while len(self.hosts) < n:
            self._add_host()
        if n not in self.fleets:
            hosts = self.hosts[:n]
            nginx = PrivateNginx(self.base, lambda listen: front_block(listen, hosts),
                                 user=WEB_GROUP)
            nginx.start()
            ssh = tuple(self.sshd.client_options(self.key))
            config = FleetConfig(hosts=tuple(h.destination for h in hosts), ssh=ssh)
            self.fleets[n] = Fleet(hosts, config, nginx, self.repo)
        return self.fleets[n]

    def close(self) -> None:
        for fleet in self.fleets.values():
            fleet.nginx.stop()
        for host in self.hosts:
            host.stop()
            kill_leftover_servers(host.root)
        self.sshd.stop()
        if self.cpu is not None:
            self.cpu.remove()


def remove_stale_users() -> list[str]:
    """userdel the simulated hosts a killed run left behind: users bearing FLEET_MARK whose
    fleet's base dir (the parent of their home's parent) is gone and that run nothing."""
    import psutil

    running = {p.info["uids"].real for p in psutil.process_iter(["uids"]) if p.info["uids"]}
    removed = []
    for user in pwd.getpwall():
        base = Path(user.pw_dir).parent.parent
        if user.pw_gecos == FLEET_MARK and not base.exists() and user.pw_uid not in running:
            remove_user(user.pw_name)
            removed.append(user.pw_name)
    return removed


@contextlib.contextmanager
def simulated_fleet(host_cpu: float = 0.0) -> Iterator[SimulatedFleet]:
    """A SimulatedFleet (each host *host_cpu* cores, 0: shared); at the end its processes
    stop, its users and base dir go (and any a killed run left behind, first)."""
    remove_stale_users()
    base = make_base_dir("relman-fleet-")
    sim: SimulatedFleet | None = None
    try:
        sim = SimulatedFleet(base, host_cpu)
        yield sim
    finally:
        if sim is not None:
            sim.close()
        for home in (base / "home").glob(f"{USER_PREFIX}*"):
            remove_user(home.name)
        shutil.rmtree(base, ignore_errors=True)
