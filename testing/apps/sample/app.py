"""The sample WSGI app relman deploys in its tests, benchmarks and demo."""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip()
# Seconds the import takes: a BOOT_DELAY file in the release, or SAMPLE_BOOT_DELAY.
_delay_file = HERE / "BOOT_DELAY"
BOOT_DELAY = float(_delay_file.read_text() if _delay_file.exists()
                   else os.environ.get("SAMPLE_BOOT_DELAY", "0"))
if os.environ.get("SAMPLE_FAIL_IMPORT") or (HERE / "FAIL_IMPORT").exists():
    raise RuntimeError("sample app: failing at import, as asked")
time.sleep(BOOT_DELAY)
if (HERE / "HELPER").exists():  # a helper that double-forks into a session of its own
    subprocess.run(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(3600)",
                    "relman-test-helper"], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
BOOTED = time.monotonic()


def unhealthy() -> bool:
    """An UNHEALTHY file fails every health check; UNHEALTHY_AFTER (seconds) fails those that
    come that long after boot, so the release passes its gate and breaks while live."""
    after = HERE / "UNHEALTHY_AFTER"
    if after.exists() and time.monotonic() - BOOTED > float(after.read_text()):
        return True
    return (HERE / "UNHEALTHY").exists()


def server(environ, start_response):
    """`/` names the version; `/slow?ms=N` sleeps first (and with `&mark=X` writes X to the
    server's output before that); `/health` is the health check; `/headers` echoes the
    request headers (tests check what nginx forwards); `/log?line=X` writes X to the
    server's output (tests rotate the log under a running server)."""
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/log":
        sys.stderr.write(query.get("line", ["-"])[0] + "\n")
        sys.stderr.flush()
    if path == "/slow":
        if "mark" in query:  # tests wait for this line: the request is in a worker's hands
            sys.stderr.write(query["mark"][0] + "\n")
            sys.stderr.flush()
        time.sleep(int(query.get("ms", ["200"])[0]) / 1000)
    if path == "/headers":
        body = "\n".join(f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith("HTTP_"))
    elif path == "/health" and unhealthy():
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"unhealthy\n"]
    else:
        body = f"sample {VERSION} pid {os.getpid()} release {os.environ.get('RELMAN_RELEASE')}"
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


application = server
