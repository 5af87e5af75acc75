"""[static] publication: what it costs a swap (issue 11 point 4).

    .venv/bin/python bench/static_publish.py [--releases 5] [--files 2000] [--runs 5]

Makes --releases release trees of --files files each (a third of them shared by name
across releases, as app.css would be; the rest with a hashed name of their own), then
times, median of --runs, the publications a deploy runs: the first one (every file
linked), one with nothing new (a redeploy, a rollback: every file already in place), one
after a new release (its own files linked, the shared names replaced), and one after a
prune of the oldest release (its files removed). The baseline is a bare os.walk + stat of
the same trees, measured in the same run: the least any publication must do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relman.releases.static import choose_published, publish, release_files

STATIC = {"/static/": "static"}


def make_release(base: Path, n: int, files: int) -> Path:
    tree = base / f"r{n}" / "static"
    for i in range(files):
        sub = tree / f"d{i % 20}"
        sub.mkdir(parents=True, exist_ok=True)
        name = f"shared{i}.css" if i % 3 == 0 else f"f{i}.{n:04x}{i:08x}.js"
        (sub / name).write_text(f"release {n} file {i}\n")
    return base / f"r{n}"


def wanted(releases: list[Path]) -> dict[str, Path]:
    return choose_published([release_files(r, STATIC)[0] for r in reversed(releases)])


def walk(releases: list[Path]) -> None:
    for release in releases:
        for here, _dirs, names in os.walk(release / "static"):
            for name in names:
                os.stat(Path(here) / name)


def median_seconds(runs: int, setup: Callable[[], None], work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        setup()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="relman-static-bench-"))
    try:
        releases = [make_release(base, n, args.files) for n in range(args.releases + 1)]
        kept, newest = releases[:-1], releases[-1]
        static_root = base / "static"

        def fresh() -> None:
            shutil.rmtree(static_root, ignore_errors=True)

        def published(which: list[Path]) -> Callable[[], None]:
            return lambda: (fresh(), publish(static_root, wanted(which)))[0]

        total = args.releases * args.files
        baseline = median_seconds(args.runs, lambda: None, lambda: walk(kept))
        cases = [
            ("first publication", fresh, lambda: publish(static_root, wanted(kept))),
            ("nothing new (redeploy, rollback)", published(kept),
             lambda: publish(static_root, wanted(kept))),
            ("a new release", published(kept),
             lambda: publish(static_root, wanted([*kept[1:], newest]))),
            ("after a prune of the oldest", published(kept),
             lambda: publish(static_root, wanted(kept[1:]))),
        ]
        print(f"{args.releases} releases x {args.files} files ({total} files), "
              f"median of {args.runs} runs")
        print(f"{'os.walk + stat of the trees (baseline)':40} {baseline * 1000:8.1f} ms")
        for label, setup, work in cases:
            took = median_seconds(args.runs, setup, work)
            print(f"{label:40} {took * 1000:8.1f} ms  ({took / baseline:.1f}x the baseline)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
