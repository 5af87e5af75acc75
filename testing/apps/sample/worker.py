"""A sample [processes] worker: it says what happens to it, one line per event, in the file
named by its first argument (and on its output), and behaves as files in the release ask:

- WORKER_FAIL: exit 1 at once (a release whose worker cannot start);
- WORKER_STOP_DELAY (seconds): finish the "current task" this long after the stop signal;
- WORKER_IGNORE_STOP: ignore the stop signal (relman must SIGKILL it after stop_timeout);
- WORKER_EXIT_AFTER (seconds): exit 1 that long after starting (a crash loop);
- WORKER_GRANDCHILD: fork a grandchild in a session of its own that sleeps (it must go
  with the worker).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVENTS = Path(sys.argv[1]) if len(sys.argv) > 1 else None
WHO = (f"{os.environ.get('RELMAN_PROCESS')} {os.environ.get('RELMAN_INSTANCE')} "
       f"{os.environ.get('RELMAN_RELEASE')} {os.getpid()}")


def event(what: str) -> None:
    line = f"{time.time():.6f} {what} {WHO}\n"
    sys.stdout.write(line)
    sys.stdout.flush()
    if EVENTS is not None:
        with EVENTS.open("a") as f:
            f.write(line)


def on_stop(signum: int, _frame: object) -> None:
    event(f"signal {signal.Signals(signum).name}")
    delay = HERE / "WORKER_STOP_DELAY"
    if delay.exists():
        time.sleep(float(delay.read_text()))
        event("task_finished")
    event("stopped")
    sys.exit(0)


if (HERE / "WORKER_FAIL").exists():
    event("failing")
    sys.exit(1)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN if (HERE / "WORKER_IGNORE_STOP").exists() else on_stop)
if (HERE / "WORKER_GRANDCHILD").exists():
    subprocess.run(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(3600)",
                    "relman-test-grandchild"], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
event("started")
exit_after = HERE / "WORKER_EXIT_AFTER"
deadline = time.monotonic() + float(exit_after.read_text()) if exit_after.exists() else None
while deadline is None or time.monotonic() < deadline:
    time.sleep(0.05)
event("crashing")
sys.exit(1)
