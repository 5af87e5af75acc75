"""A private sshd on a loopback port (its own host key, config and authorized keys), as the
ssh-command tests and the simulated fleet (testing.fleet) need."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from testing.needs import skip_or_fail
from testing.ports import free_port
from testing.waiting import wait_until


def require_tool(name: str, package: str, *also: str) -> str:
    """Return the tool's path; skip without it, but fail on CI (CI=true), like require_nginx."""
    found = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
    if found:
        return found
    skip_or_fail(f"{name} is not installed",
                 f"install it (apt-get install {package}, .ci/system-deps)")



def login_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


class PrivateSshd:
    """sshd -D on 127.0.0.1:<free port> with its own host key, config, pid file and
    authorized_keys, all under *base*; stopped by the pid it started."""

    def __init__(self, base: Path) -> None:
        self.binary = require_tool("sshd", "openssh-server", "/usr/sbin/sshd")
        self.ssh = require_tool("ssh", "openssh-client")
        self.keygen = require_tool("ssh-keygen", "openssh-client")
        self.base = base
        self.user = login_name()
        self.authorized = base / "authorized_keys"
        self.authorized.write_text("")
        # Other users' keys (authorize_user): one file each, named after the user.
        self.user_keys = base / "authorized_keys.d"
        self.user_keys.mkdir(mode=0o755)
        self.host_key = self._keygen("host_key")
        self.log = base / "sshd.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _keygen(self, name: str) -> Path:
        key = self.base / name
        subprocess.run([self.keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                       check=True, timeout=30, capture_output=True)
        return key

    def _config(self) -> Path:
        conf = self.base / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized} {self.user_keys}/%u\n"
            # No PAM (it wants a service file and a tty); tmp dirs fail StrictModes' checks.
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAllowTcpForwarding no\nX11Forwarding no\n"
            "LogLevel VERBOSE\n")
        return conf

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd started by root chroots its pre-auth child into this compiled-in directory
            # and refuses to start without it; Debian's ssh.service creates it at start
            # (RuntimeDirectory=sshd). It is empty and lives on tmpfs, so it is left in place.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            conf = self._config()
            check = subprocess.run([self.binary, "-t", "-f", str(conf)], capture_output=True,
                                   text=True, timeout=30, check=False)
            assert check.returncode == 0, f"sshd -t: {check.stderr}"
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([self.binary, "-f", str(conf), "-D", "-e"],
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_until(self._listening, 10, what=f"sshd on 127.0.0.1:{self.port}")
            except AssertionError:
                # free_port() cannot reserve the port: another process may have taken it.
                if "Address already in use" in self.log.read_text(errors="replace"):
                    self.stop()
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            return
        raise AssertionError(f"sshd found no free port in 3 attempts:\n{self.log_tail()}")

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited {self.proc.returncode}:\n{self.log_tail()}")
        return f"Server listening on 127.0.0.1 port {self.port}." in self.log.read_text(
            errors="replace")

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # Its session's stragglers, if any: the group id stays reserved while one lives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def authorize(self, forced_command: str, name: str) -> Path:
        """A new client key whose authorized_keys line forces *forced_command*."""
        assert '"' not in forced_command
        key = self._keygen(name)
        public = key.with_suffix(".pub").read_text().strip()
        with self.authorized.open("a") as f:
            f.write(f'command="{forced_command}",restrict {public}\n')
        return key

    def authorize_user(self, user: str, forced_command: str, key: Path) -> None:
        """Let *key* (made by new_key()) log in as *user*, forced to run *forced_command*."""
        assert '"' not in forced_command
        public = key.with_suffix(".pub").read_text().strip()
        with (self.user_keys / user).open("a") as f:
            f.write(f'command="{forced_command}",restrict {public}\n')
        (self.user_keys / user).chmod(0o644)  # sshd reads it as the user

    def new_key(self, name: str) -> Path:
        """A client key pair under the base dir; the private key's path."""
        return self._keygen(name)

    def client_options(self, key: Path) -> list[str]:
        """ssh's argv up to the destination: this sshd's host key the only one known."""
        known_hosts = self.base / "known_hosts"
        host_public = self.host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        return [self.ssh, "-F", "/dev/null", "-i", str(key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "LogLevel=ERROR"]

    def argv(self, key: Path, *command: str) -> list[str]:
        return [*self.client_options(key), "-p", str(self.port), f"{self.user}@127.0.0.1",
                *command]

    def run(self, key: Path, *command: str, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        """`ssh user@127.0.0.1 COMMAND...`: ssh joins the words with spaces, as always."""
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return subprocess.run(self.argv(key, *command), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, env=env, check=False)
