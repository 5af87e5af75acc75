"""What the CLI shows: tables for releases and status, log following, the checks of `check`.

The tables are standard library only: `status` and `history` are the commands run most
over SSH. Following logs and the checks import what they need (watchfiles, asyncio) inside.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import UnknownRelease, UsageError
from relman.releases import AppRoot, registry
from relman.releases.ids import is_release_id

if TYPE_CHECKING:
    from relman.config import Config
    from relman.results import ProcessCount, PsResult, Status


def time_ago(ts: float, now: float | None = None) -> str:
    """'42s', '5m', '3h', '2d': how long ago *ts* was."""
    delta = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def history_detail(entry: dict[str, Any]) -> str:
    """What a history line says beyond its event, release and who: the error, the settings
    changed, the counts scaled, the process concerned."""
    parts = [str(entry.get("error") or "")]
    if entry.get("process") and entry.get("process") != "all":
        parts.append(f"{entry['process']} {entry.get('index', '')}".rstrip())
    if isinstance(entry.get("changes"), list):
        parts.append("; ".join(map(str, entry["changes"])))
    if isinstance(entry.get("counts"), dict):
        parts.append(" ".join(f"{k}={v}" for k, v in entry["counts"].items())
                     + (" (reset)" if entry.get("reset") else ""))
    elif entry.get("reset"):
        parts.append("--reset")
    return " ".join(p for p in parts if p)


def release_rows(root: AppRoot) -> list[dict[str, Any]]:
    """Every manifest, oldest first, marked live and rollback target: `relman releases`."""
    manifests = registry.load_all(root)
    live = root.current_release()
    target = registry.rollback_target(manifests, live)
    return [m.to_json() | {"live": m.id == live,
                           "rollback_target": bool(target and m.id == target.id)}
            for m in manifests]


def _manifest(root: AppRoot, release: str) -> registry.Manifest:
    """The manifest of *release*, or UnknownRelease."""
    try:
        found = registry.load(root, release) if is_release_id(release) else None
    except registry.Unreadable as e:
        raise UnknownRelease(f"release {release}: its manifest is unreadable: {e.reason}") \
            from None
    if found is None:
        raise UnknownRelease(f"release {release!r}: no such release")
    return found


def release_settings(root: AppRoot, release: str) -> dict[str, Any]:
    """`relman releases --settings ID`: the settings the release recorded (None if none)."""
    return {"release": release, "settings": dict(_manifest(root, release).settings) or None}


def render_settings(data: dict[str, Any]) -> str:
    """Recorded settings as relman.toml would spell them (env values as their hashes), in
    the order of relman.toml(5) (the manifest's JSON has its keys sorted)."""
    from relman.config import schema
    from relman.config_values import toml_text

    settings = data["settings"]
    if not settings:
        return (f"release {data['release']} has no recorded settings (built before releases "
                "recorded them): it runs with the config's")
    rank = {key: n for n, (key, *_) in enumerate(schema())}
    lines = [f"# settings of release {data['release']}; env values are shown as keyed hashes"]
    tables = [(name, name, settings[name]) for name in ("server", "health") if name in settings]
    processes = settings.get("processes")
    if isinstance(processes, dict):
        tables += [(f"processes.{name}", "processes.NAME", table)
                   for name, table in processes.items()]
    for title, kind, table in tables:
        items = table.items() if isinstance(table, dict) else [("(value)", table)]
        lines += ["", f"[{title}]"] + [
            f"{key} = {toml_text(value)}" for key, value in
            sorted(items, key=lambda kv: (rank.get(f"{kind}.{kv[0]}", len(rank)), kv[0]))]
    return "\n".join(lines)


def release_diff(root: AppRoot, old: str, new: str) -> list[str]:
    """`relman releases --diff A B`: what changed from release *old* to *new*, as lines: ref,
    sha and dependencies first, then the settings (relman.settings.settings_diff)."""
    from relman.settings import settings_diff

    a, b = _manifest(root, old), _manifest(root, new)
    lines = [f"{name} {getattr(a, name) or '-'} -> {getattr(b, name) or '-'}"
             for name in ("ref", "sha", "deps_hash") if getattr(a, name) != getattr(b, name)]
    unrecorded = [m.id for m in (a, b) if not m.settings]
    if unrecorded:
        return lines + [f"settings of {rid}: not recorded (built before releases recorded "
                        "them)" for rid in unrecorded]
    return lines + settings_diff(a.settings, b.settings)


def server_log(root: AppRoot, release: str | None, process: str | None = None) -> Path:
    """The log `relman logs` shows: of *release*, else of the live release; the server's,
    or that of *process* ("web" is the server)."""
    if release:
        if not is_release_id(release) or registry.load(root, release) is None:
            raise UnknownRelease(f"release {release!r}: no such release")
    else:
        release = root.current_release()
        if release is None:
            raise UsageError("nothing is deployed yet: name a release")
    if process is None or process == "web":
        return root.server_log(release)
    from relman.config import PROCESS_NAME_RE

    if not PROCESS_NAME_RE.fullmatch(process):
        raise UsageError(f"--process {process!r}: not a process name ([a-z][a-z0-9_-]*)")
    path = root.process_log(release, process)
    if not path.exists():
        raise UsageError(f"release {release} has no log of a process {process!r}: "
                         f"{path} does not exist")
    return path


def render_releases(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no releases yet: relman deploy REF"
    lines = [f"   {'RELEASE':<26} {'REF':<16} {'SHA':<9} {'AGE':>5} {'LAST LIVE':>9}  STATE"]
    for row in reversed(rows):
        mark = "*" if row["live"] else ("<" if row["rollback_target"] else " ")
        state = row["state"] + (" known-good" if row["known_good"] else "")
        last_live = time_ago(row["last_live"]) if row.get("last_live") else "-"
        lines.append(f" {mark} {row['id']:<26} {row['ref'][:16]:<16} {row['sha'][:8]:<9} "
                     f"{time_ago(row['created']):>5} {last_live:>9}  {state}")
    lines.append("(* live, < rollback target: the release live before the live one)")
    return "\n".join(lines)


def render_status(s: Status) -> str:
    """`relman status` for people: the daemon, the live release, each server, the job."""
    d, health = s.daemon, s.health
    lines = [
        f"app:      {s.app}",
        f"daemon:   pid {d.pid}, up {d.figures.uptime:.0f}s, rss {d.figures.rss // 2**20} MiB",
        f"live:     {s.live or '-'}"
        + (f" ({'healthy' if health.healthy else 'UNHEALTHY'}: {health.detail})"
           if health else ""),
        f"rollback: {s.rollback_target or '-'}",
    ]
    for srv in s.servers:
        figures = srv.figures
        what = "server:  " if srv.process == "web" else f"{srv.process[:8] + ':':<9}"
        lines.append(
            f"{what} {srv.instance} {srv.state} pid {srv.pid} "
            f"workers {figures.workers if figures else '?'} "
            f"rss {figures.rss // 2**20 if figures else 0} MiB "
            f"up {figures.uptime if figures else 0:.0f}s")
    if s.processes:
        lines.append("processes: " + ", ".join(
            f"{c.name} {c.running}/{c.wanted}{' (scaled)' if c.scaled else ''}"
            for c in s.processes))
    if s.job:
        job = s.job
        lines.append(f"job:      {job.job} {job.release or job.ref} "
                     f"by {job.who}, at step {job.step}")
    if s.prepared:  # deploy --prepare: waits for `relman switch` or `relman abort`
        left = max(0.0, (s.prepared_until or 0.0) - time.time())
        lines.append(f"prepared: {s.prepared} on next.sock, stopped in {left:.0f}s unless "
                     "switched")
    return "\n".join(lines)


def parse_counts(words: tuple[str, ...]) -> dict[str, int]:
    """`worker=3 beat=1` as {"worker": 3, "beat": 1}; UsageError (exit 2) naming the word."""
    counts: dict[str, int] = {}
    for word in words:
        name, sep, number = word.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
            raise UsageError(f"relman scale: {word!r} is not NAME=N (a process name, '=', a "
                             "count)")
        if not re.fullmatch(r"\d{1,4}", number):
            raise UsageError(f"relman scale: {word!r}: the count must be a whole number "
                             "from 0 to 9999")
        counts[name] = int(number)
    return counts


def render_counts(counts: tuple[ProcessCount, ...]) -> str:
    if not counts:
        return "no processes ([processes.NAME] in the config)"
    return "\n".join(f"{c.name}: {c.running}/{c.wanted} running"
                     + (" (scaled)" if c.scaled else "") for c in counts)


def render_ps(result: PsResult) -> str:
    """`relman ps` for people: one line per instance, web server first."""
    lines = [f"{'NAME':<12} {'#':>2}  {'RELEASE':<26} {'PID':>7}  {'STATE':<9} {'UP':>5} "
             f"{'RESTARTS':>8} {'RSS':>7} {'CPU%':>5}"]
    for i in result.instances:
        f = i.figures
        lines.append(f"{i.process:<12} {i.index:>2}  {i.release:<26} {i.pid:>7}  "
                     f"{i.state:<9} {time_ago(i.started):>5} {i.restarts:>8} "
                     f"{(f.rss // 2**20 if f else 0):>5}Mi {(f.cpu_percent if f else 0):>5.1f}")
    if len(lines) == 1:
        lines.append("(nothing runs)")
    if result.counts:
        lines.append("")
        lines.append(render_counts(result.counts))
    return "\n".join(lines)


def follow(path: Path, *, lines: int, keep_going: bool) -> Iterator[str]:
    """The last *lines* lines of *path*, then (with keep_going) new lines as they come:
    whole lines only, across rotation (a new inode) and truncation."""
    offset, inode, tail = 0, 0, b""
    try:
        with path.open("rb") as f:
            offset, inode = f.seek(0, os.SEEK_END), os.fstat(f.fileno()).st_ino
            start = f.seek(max(0, offset - 64 * 1024))
            tail = f.read(offset - start)
    except FileNotFoundError:
        pass
    if lines > 0:
        yield from tail.decode(errors="replace").splitlines()[-lines:]
    if not keep_going:
        return
    import watchfiles

    pending = b""  # the start of a line whose end is not written yet
    # A timeout yield every second reads whatever came before the watch itself began.
    for _changes in watchfiles.watch(path.parent, recursive=False, rust_timeout=1000,
                                     yield_on_timeout=True, debounce=100,
                                     watch_filter=lambda _c, p: p == str(path)):
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != inode or st.st_size < offset:  # rotated or truncated
                    offset, inode, pending = 0, st.st_ino, b""
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:  # moved away by logrotate: wait for the new file
            continue
        offset += len(data)
        complete, newline, pending = (pending + data).rpartition(b"\n")
        if newline:
            yield from complete.decode(errors="replace").split("\n")


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


def _shared_check(config: Config, root: AppRoot) -> dict[str, Any]:
    """The files build.shared and server.env_file need in shared/ before a deploy (init
    creates none of them; a shared directory is created by the deploy)."""
    from relman.envfile import read_env_file
    from relman.errors import ConfigError

    env_file = config.server.env_file
    problems = [f"build.shared: {root.shared / entry} does not exist; create it first"
                for entry in config.build.shared
                if not entry.endswith("/") and entry != env_file
                and not (root.shared / entry).exists()]
    if env_file:
        try:
            read_env_file(root.shared / env_file)  # its values are never shown
        except ConfigError as e:
            problems.append(e.message)
    return _check("shared", not problems, "; ".join(problems) or f"{root.shared}: complete")


def _static_check(root: AppRoot) -> dict[str, Any]:
    """[static]: nginx's workers, another user, must search every directory down to
    static/ (the first deploy creates it 0755, and its files readable by all)."""
    target = root.static if root.static.is_dir() else root.root
    closed = [p for p in (*reversed(target.parents), target)
              if p.is_dir() and not p.stat().st_mode & 0o001]
    if closed:
        return _check("static", False, f"{closed[0]} (mode {closed[0].stat().st_mode & 0o7777:04o}"
                      f") keeps nginx's workers from {root.static}: chmod o+x {closed[0]}")
    return _check("static", True, f"{root.static}: other users may search it")


def _nginx_check(returncode: int, stderr: str, *, root_user: bool) -> dict[str, Any]:
    """`nginx -t` as whoever runs `check`. The deploy user may read the whole config but not
    open what nginx -t opens after parsing it (Debian's /run/nginx.pid, its logs), nor a
    TLS key only root may read (that one stops the parse): errors that are all "Permission
    denied" pass, and say what was left untested."""
    # "2026/11/29 14:26:46 [emerg] 2001#2001: open() ..." -> "nginx: [emerg] open() ..."
    lines = [re.sub(r"^[\d/]+ [\d:]+ (\[\w+\]) \d+#\d+: ", r"nginx: \1 ", line)
             for line in stderr.strip().splitlines()]
    errors = [line for line in lines if any(f"[{level}]" in line
                                            for level in ("emerg", "alert", "crit"))]
    if returncode == 0:
        return _check("nginx -t", True, "syntax is ok, test is successful")
    if not root_user and errors and all("Permission denied" in line for line in errors):
        if any("syntax is ok" in line for line in lines):
            return _check("nginx -t", True, "syntax is ok (the rest of the test needs root: "
                          "sudo nginx -t)")
        # A TLS key only root may read stops the parse itself: nothing wrong is known, but
        # nothing after it was tested either.
        what = re.sub(r"^nginx: \[\w+\] |: BIO_new_file.*$|\s*\(13: .*$", "", errors[0])
        return _check("nginx -t", True, f"stopped at a file only root may read ({what}): "
                      "the test needs root: sudo nginx -t")
    return _check("nginx -t", False, (errors or lines or ["failed"])[0])


def _host_checks(config: Config) -> list[dict[str, Any]]:
    """The interpreter, the socket group and the repository's owner (host_checks.py)."""
    from relman import host_checks

    found = [host_checks.python_check(config.build.python)]
    if config.server.socket_group and config.server.kind != "none":
        found.append(host_checks.socket_group_check(config.server.socket_group,
                                                    gids=host_checks.user_gids(),
                                                    uid=os.geteuid()))
    owner = host_checks.repo_owner_check(config.app.repo, uid=os.geteuid())
    if owner is not None:
        found.append(owner)
    names = ("build.python", "socket group", "repository owner")
    return [_check(name, ok, detail) for name, (ok, detail) in zip(names, found, strict=False)]


def check_all(config: Config) -> list[dict[str, Any]]:
    """Each check of `relman check`, passed or not, with what it saw."""
    import asyncio
    import subprocess

    from relman.supervisor.health import probe_socket

    root = AppRoot(config.app.root)
    results = [_check("config", True, str(config.path))]
    missing = [p.name for p in (root.repo, root.releases, root.venvs, root.shared, root.run,
                                root.state, root.log) if not p.is_dir()]
    results.append(_check("layout", not missing,
                          f"missing {', '.join(missing)}: run relman init" if missing
                          else str(root.root)))
    results += _host_checks(config)
    unwritable = [str(p) for p in (root.state, root.run, root.releases, root.log)
                  if p.is_dir() and not os.access(p, os.W_OK)]
    results.append(_check("permissions", not unwritable,
                          f"not writable: {', '.join(unwritable)}" if unwritable else "writable"))
    if config.build.shared or config.server.env_file:
        results.append(_shared_check(config, root))
    if config.static:
        results.append(_static_check(root))
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx:
        proc = subprocess.run([nginx, "-t"], capture_output=True, text=True, check=False)
        results.append(_nginx_check(proc.returncode, proc.stderr, root_user=os.geteuid() == 0))
    if config.server.kind == "none":
        results.append(_check("live socket", True, 'none: server.kind = "none" (no web server)'))
    elif root.app_sock.exists():
        probe = asyncio.run(probe_socket(root.app_sock, protocol=config.server.protocol,
                                         path=config.health.path, timeout=5))
        lo, hi = config.health.expect
        ok = probe.status is not None and lo <= probe.status <= hi
        results.append(_check("live socket", ok, f"GET {config.health.path}: {probe.detail}"))
    elif not root.current.is_symlink() and not root.app_sock.is_symlink():
        # A fresh root: `check` belongs before the first deploy too, and passes there.
        results.append(_check("live socket", True, "nothing deployed yet (relman deploy REF)"))
    else:
        results.append(_check("live socket", False, f"{root.app_sock} does not lead to a "
                              "running server (stopped, or its server died)"))
    return results
