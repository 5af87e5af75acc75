"""The Celery sample app's WSGI side (gunicorn app:server): `/` names the version and the
release, `/health` is the health check, `/enqueue?name=X&seconds=N` queues a task."""

import os
from pathlib import Path
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip()


def server(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("PATH_INFO") == "/enqueue":
        from tasks import sleep_then_mark

        sleep_then_mark.delay(query["name"][0], float(query.get("seconds", ["0"])[0]))
        body = "queued"
    else:
        body = f"celeryapp {VERSION} pid {os.getpid()} release {os.environ.get('RELMAN_RELEASE')}"
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


application = server
