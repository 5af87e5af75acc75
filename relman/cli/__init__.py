"""The relman command line: click commands over the control socket; the one place errors
become output and exit codes."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from relman import __version__
from relman.cli import processes
from relman.cli.context import WAIT, Context, pass_ctx
from relman.config_search import hoist_global_options
from relman.errors import INTERNAL_ERROR_EXIT, RelmanError, UsageError

# Every command starts with these imports, over SSH too: what only some commands need (the
# release store, the views, the daemon's answers, structlog, asyncio) is imported inside them.

SSH_ALLOWED = frozenset({"deploy", "rollback", "releases", "status", "ps", "history", "logs"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file (relman.toml).")
@click.option("--app", metavar="NAME", help="Use /etc/relman/NAME.toml.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(__version__, prog_name="relman")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, app: str | None, as_json: bool) -> None:
    """Deploy a git ref of a Python web app behind nginx with zero failed requests."""
    ctx.obj = Context(config_path, app, as_json)


@cli.command()
@pass_ctx
def init(ctx: Context) -> None:
    """Create the app root layout and check permissions."""
    made = ctx.root.create()
    problems = [str(p) for p in (ctx.root.root, ctx.root.state, ctx.root.run)
                if not os.access(p, os.W_OK)]
    if problems:
        raise UsageError(f"not writable by {getpass.getuser()}: {', '.join(problems)}")
    ctx.emit({"root": str(ctx.root.root), "created": [str(p) for p in made]},
             lambda: f"initialised {ctx.root.root}" +
             "".join(f"\n  created {p}" for p in made))


@cli.command()
@pass_ctx
def daemon(ctx: Context) -> None:
    """Run the daemon in the foreground (systemd's ExecStart)."""
    # structlog imports rich when it is installed (import-linter brings it into a test venv)
    # for the tracebacks of its ConsoleRenderer, which relman never uses: 4 MiB of the
    # daemon's RSS for its whole life (issue 11). A None entry makes that import fail.
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from relman import logs
    from relman.daemon import run_daemon

    logs.configure(json=ctx.json)
    run_daemon(ctx.config.path)


@cli.command()
@click.argument("ref")
@WAIT
@pass_ctx
def deploy(ctx: Context, ref: str, wait: bool) -> None:
    """Fetch REF, build it, run the release phase and swap it in."""
    from relman.results import DeployResult

    result = ctx.call("deploy", DeployResult, ref=ref, wait=wait)
    ctx.emit(result.to_json(), lambda: f"deployed {result.ref} as {result.release}")


@cli.command()
@click.argument("release", required=False)
@WAIT
@pass_ctx
def rollback(ctx: Context, release: str | None, wait: bool) -> None:
    """Swap to the previous known-good release (or RELEASE)."""
    from relman.results import RollbackResult

    result = ctx.call("rollback", RollbackResult, release=release, wait=wait)
    ctx.emit(result.to_json(), lambda: f"rolled back to {result.release}")


@cli.command()
@click.option("--settings", "settings_id", metavar="ID",
              help="The settings release ID runs with (env values as hashes).")
@click.option("--diff", nargs=2, metavar="A B", help="What changed from release A to B.")
@pass_ctx
def releases(ctx: Context, settings_id: str | None, diff: tuple[str, str] | None) -> None:
    """List releases: id, ref, sha, age, state, live and rollback-target markers."""
    from relman import views

    if settings_id and diff:
        raise click.UsageError("--settings and --diff cannot be used together")
    if settings_id:
        data = views.release_settings(ctx.root_only, settings_id)
        ctx.emit(data, lambda: views.render_settings(data))
    elif diff:
        lines = views.release_diff(ctx.root_only, *diff)
        ctx.emit(lines, lambda: "\n".join(lines) or "no differences")
    else:
        rows = views.release_rows(ctx.root_only)
        ctx.emit(rows, lambda: views.render_releases(rows))


@cli.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Daemon, live release, pids, workers, uptime, RSS, CPU, health."""
    from relman.results import Status
    from relman.views import render_status

    result = ctx.call("status", Status)
    ctx.emit(result.to_json(), lambda: render_status(result))


@cli.command()
@WAIT
@pass_ctx
def start(ctx: Context, wait: bool) -> None:
    """Start the app server of the current release."""
    from relman.results import StartResult

    result = ctx.call("start", StartResult, wait=wait)
    ctx.emit(result.to_json(), lambda: f"started {result.release} (pid {result.pid})")


@cli.command()
@WAIT
@pass_ctx
def stop(ctx: Context, wait: bool) -> None:
    """Stop the app servers (the site is down until `relman start`)."""
    from relman.results import StopResult

    result = ctx.call("stop", StopResult, wait=wait)
    ctx.emit(result.to_json(), "stopped")


@cli.command()
@click.argument("name", required=False)
@WAIT
@pass_ctx
def restart(ctx: Context, name: str | None, wait: bool) -> None:
    """Fresh instances of the live release with today's config: everything, the web server
    (NAME "web", swapped in without a failed request) or one process type."""
    from relman.results import RestartResult

    result = ctx.call("restart", RestartResult, wait=wait, name=name)
    ctx.emit(result.to_json(), lambda: f"restarted {name + ' of ' if name else ''}"
             f"{result.release}")


@cli.command()
@click.option("--release", help="Only entries of this release.")
@click.option("--event", help="Only this event: deployed, rolled_back, restarted, "
              "deploy_failed, server_crashed, crash_loop, auto_rollback, pruned, ...")
@click.option("--since", type=float, metavar="HOURS", help="Only the last HOURS hours.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most N entries.")
@pass_ctx
def history(ctx: Context, release: str | None, event: str | None, since: float | None,
            limit: int) -> None:
    """The audit log: what happened, when, by whom."""
    from relman.releases import history as audit
    from relman.views import history_detail, time_ago

    since_ts = time.time() - since * 3600 if since else None
    entries = list(audit.read(ctx.root_only.history, event=event, release=release, since=since_ts))
    entries = entries[-limit:]
    ctx.emit(entries, lambda: "\n".join(
        f"{time_ago(e['time']):>8}  {e['event']:<16} {e.get('release') or e.get('ref') or '':<26}"
        f" {e.get('who') or ''} {history_detail(e)}".rstrip() for e in entries))


@cli.command()
@pass_ctx
def check(ctx: Context) -> None:
    """Config, layout, permissions, shared files, `nginx -t`, socket reachability."""
    from relman.views import check_all

    results = check_all(ctx.config)
    ctx.emit(results, lambda: "\n".join(
        f"{'ok ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}" for r in results))
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


@cli.command("nginx-config")
@click.option("--listen", default="80", show_default=True, help="nginx listen value.")
@click.option("--server-name", default="_", show_default=True, help="nginx server_name.")
@pass_ctx
def nginx_config(ctx: Context, listen: str, server_name: str) -> None:
    """Print the nginx server block for this app."""
    from relman.nginxconf import render_server_block

    server = ctx.config.server
    if server.kind == "none":
        raise UsageError(f'{ctx.path}: server.kind = "none": there is no web server for nginx '
                         "to proxy")
    protocol = "uwsgi" if server.kind == "uwsgi" and server.protocol == "uwsgi" else "http"
    text = render_server_block(name=ctx.config.app.name, root=ctx.root.root,
                               protocol=protocol, listen=listen, server_name=server_name)
    ctx.emit({"protocol": protocol, "config": text}, text.rstrip())


@cli.command()
@WAIT
@pass_ctx
def prune(ctx: Context, wait: bool) -> None:
    """Remove releases and venvs beyond keep_releases (never live, target or running)."""
    from relman.results import PruneResult

    result = ctx.call("prune", PruneResult, wait=wait)
    ctx.emit(result.to_json(), lambda: f"removed {len(result.releases)} releases, "
             f"{len(result.venvs)} venvs")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (click's), e.g. `relman completion bash >
    /etc/bash_completion.d/relman`."""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    if complete is None:  # click knows all three: a bug if not
        raise UsageError(f"relman completion: no completion for {shell}")
    click.echo(complete(cli, {}, "relman", "_RELMAN_COMPLETE").source())


@cli.command("ssh-command")
@click.pass_context
def ssh_command(click_ctx: click.Context) -> None:
    """Forced command for authorized_keys: run SSH_ORIGINAL_COMMAND if it is allowed."""
    ctx: Context = click_ctx.obj
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        words = shlex.split(original)
    except ValueError:
        raise UsageError("ssh-command: cannot parse SSH_ORIGINAL_COMMAND") from None
    if words[:1] == ["relman"]:
        words = words[1:]
    if not words or words[0] not in SSH_ALLOWED or words[0] not in cli.commands:
        allowed = ", ".join(sorted(SSH_ALLOWED))
        raise UsageError(f"ssh-command: {original or '(no command)'!r} is not allowed; "
                         f"allowed: {allowed}")
    if any(w.startswith("--config") or w.startswith("--app") for w in words):
        raise UsageError("ssh-command: --config and --app are fixed by the forced command")
    command = cli.commands[words[0]]
    try:
        sub = command.make_context(words[0], words[1:], parent=click_ctx)
    except click.UsageError as e:  # one line, not click's usage block naming ssh-command
        raise UsageError(f"ssh-command: {original!r}: {e.format_message()}") from None
    with sub:
        command.invoke(sub)
    del ctx


@contextlib.contextmanager
def error_handler(as_json: bool) -> Iterator[None]:
    """Turn every error into one line and its exit code; bugs get exit 70 and a log file."""
    try:
        yield
    except RelmanError as e:
        if as_json:
            click.echo(json.dumps({"error": e.to_dict()}))
        else:
            click.echo(f"relman: error: {e.message}", err=True)
            if e.tail:
                click.echo("  " + e.tail.replace("\n", "\n  "), err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
        raise SystemExit(e.exit_code) from None
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(2) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(130) from None
    except (KeyboardInterrupt, SystemExit, BrokenPipeError):
        raise
    except Exception:  # noqa: BLE001 - the one funnel for bugs: exit 70 with a pointer
        log_path = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
        log_path = log_path / "relman" / "crash.log"
        with contextlib.suppress(OSError):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as f:
                f.write(f"--- {time.ctime()} relman {__version__} {sys.argv}\n")
                f.write(traceback.format_exc())
        click.echo(f"relman: internal error (a bug): see {log_path}", err=True)
        raise SystemExit(INTERNAL_ERROR_EXIT) from None


for command in (processes.ps, processes.scale, processes.logs, processes.run):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    with error_handler("--json" in args):
        cli.main(args=args, prog_name="relman", standalone_mode=False)
