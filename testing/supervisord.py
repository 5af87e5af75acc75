"""supervisord (Supervisor 4.3, from the test extras) running one program: what
bench/supervise.py compares the relman daemon with, with the same app in the same run.

The config is what `echo_supervisord_conf` starts from (an RPC interface on a unix socket,
for supervisorctl, as relman has its control socket) plus one [program]: restarted when
it exits, in a process group of its own that a stop signals as a whole.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil

from testing.daemon import terminate
from testing.waiting import wait_until

SUPERVISORD = Path(sys.executable).with_name("supervisord")


def write_conf(base: Path, name: str, command: list[str], directory: Path) -> Path:
    """supervisord.conf in *base* for one program *name* running *command* in *directory*."""
    conf = base / "supervisord.conf"
    conf.write_text(f"""\
[unix_http_server]
file={base}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={base}/supervisord.log
pidfile={base}/supervisord.pid
childlogdir={base}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{base}/supervisor.sock

[program:{name}]
command={subprocess.list2cmdline(command)}
directory={directory}
autorestart=true
startsecs=1
stopsignal=TERM
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={base}/{name}.log
""")
    return conf


class Supervisord:
    """supervisord in the foreground, in a session of its own; its program's pid."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Supervisord:
        with (self.conf.parent / "supervisord.out").open("ab") as out:
            self.proc = subprocess.Popen([str(SUPERVISORD), "-n", "-c", str(self.conf)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_until(self.program_pid, timeout=30, what="supervisord's program to start")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def program_pid(self) -> int | None:
        """The pid of supervisord's one program (its only child), or None."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"supervisord exited {self.proc.returncode}: see "
                                 f"{self.conf.parent / 'supervisord.log'}")
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.pid).children()
            return children[0].pid if children else None
        return None

    def stop(self) -> None:
        """SIGTERM: supervisord stops its program (its whole group), then exits."""
        terminate(self.proc)
