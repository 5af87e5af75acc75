"""follow(): the tail of a log, then whole new lines as they are written, across rotation."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from relman.views import follow


def follower(path: Path, lines: int) -> queue.Queue[str]:
    seen: queue.Queue[str] = queue.Queue()

    def run() -> None:
        for line in follow(path, lines=lines, keep_going=True):
            seen.put(line)

    threading.Thread(target=run, daemon=True).start()
    return seen


def test_tail_then_whole_lines_then_a_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    seen = follower(log, lines=1)
    assert seen.get(timeout=10) == "two"
    time.sleep(0.5)  # let the watch begin (lines written before it are read all the same)
    with log.open("a") as f:
        f.write("thr")
        f.flush()
        time.sleep(1.5)  # long enough for the watch to read the half line
        f.write("ee\nfour\n")
    assert seen.get(timeout=10) == "three"
    assert seen.get(timeout=10) == "four"
    log.rename(tmp_path / "app.log.1")  # rotation: a new file at the same path
    log.write_text("fresh\n")
    assert seen.get(timeout=10) == "fresh"


def test_no_tail_lines_with_zero(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old\n")
    assert list(follow(log, lines=0, keep_going=False)) == []
    assert list(follow(log, lines=5, keep_going=False)) == ["old"]
    assert list(follow(tmp_path / "missing.log", lines=5, keep_going=False)) == []
