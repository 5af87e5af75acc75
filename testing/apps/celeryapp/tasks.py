"""A Celery app on kombu's filesystem broker (no Redis, no RabbitMQ): `celery -A tasks
worker` and `celery -A tasks beat`.

Everything lives under $CELERYAPP_DATA (default: ./data), shared by every release:
  broker/     the queue: one file per message (kombu's data_folder_in and _out)
  processed/  messages taken by a worker
  started/X   written when task X starts: "<release> <pid>"
  done/X      written when task X has finished: "<release> <pid>"
  beat/       beat's schedule file
  ticks/      one file per run of the `tick` task (beat sends it every $CELERYAPP_TICK s):
              "<release> <pid> <origin>", origin naming the sender: "gen<beat's pid>@<host>"
"""

import os
import time
from pathlib import Path

from celery import Celery

DATA = Path(os.environ.get("CELERYAPP_DATA") or Path(__file__).resolve().parent / "data")
for sub in ("broker", "processed", "started", "done", "beat", "ticks"):
    (DATA / sub).mkdir(parents=True, exist_ok=True)

app = Celery("tasks")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": str(DATA / "broker"),
        "data_folder_out": str(DATA / "broker"),
        "processed_folder": str(DATA / "processed"),
        "store_processed": True,
        # kombu's default is 1 s between looks at the folder: a task would wait that long.
        "polling_interval": 0.1,
    },
    # One task at a time, taken only when the worker is free, acknowledged when it is done:
    # a task cut short by a SIGKILL is not lost.
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    beat_schedule_filename=str(DATA / "beat" / "schedule"),
    beat_schedule={"tick": {"task": "tasks.tick", "schedule": float(
        os.environ.get("CELERYAPP_TICK", "1"))}},
)


def _mark(kind: str, name: str, *extra: str) -> None:
    path = DATA / kind / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(" ".join([str(os.environ.get("RELMAN_RELEASE")), str(os.getpid()), *extra])
                   + "\n")
    tmp.replace(path)


@app.task
def sleep_then_mark(name: str, seconds: float) -> str:
    """Write started/NAME, sleep *seconds*, write done/NAME."""
    _mark("started", name)
    time.sleep(seconds)
    _mark("done", name)
    return name


@app.task(bind=True)
def tick(self) -> None:
    """beat's task: one file per tick, named by the time; it names the beat that sent it."""
    _mark("ticks", f"tick-{time.time():.3f}", str(self.request.origin))
