"""A server's identity is taken from what /proc shows once its exec is complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from relman.supervisor.identity import find_process, take_identity


def test_identity_of_a_process_just_spawned_has_its_argv(tmp_path: Path):
    """Right after Popen returns, the kernel may not have set up the new command line yet;
    the identity still records it (an empty argv never matches again, so a restarted
    daemon could not adopt the server). Spawned as relman spawns servers: a script, in
    its own session."""
    script = tmp_path / "server"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    script.chmod(0o755)
    for _ in range(50):  # about a quarter of the spawns caught the empty argv before
        proc = subprocess.Popen([script, "--bind", "x"], cwd=tmp_path, start_new_session=True,
                                stdin=subprocess.DEVNULL, close_fds=True)
        try:
            identity = take_identity(proc.pid)
            assert identity.argv == (sys.executable, str(script), "--bind", "x")
            assert identity.cwd == str(tmp_path)
            assert find_process(identity) is not None
        finally:
            proc.kill()
            proc.wait()
