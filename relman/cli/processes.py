"""The commands of the processes beside the web server (DESIGN section 8): ps, scale, logs
and run."""

from __future__ import annotations

import os

import click

from relman.cli.context import WAIT, Context, pass_ctx
from relman.errors import UsageError


@click.command()
@pass_ctx
def ps(ctx: Context) -> None:
    """Every process: name, instance, release, pid, state, uptime, restarts, RSS, CPU."""
    from relman.results import PsResult
    from relman.views import render_ps

    result = ctx.call("ps", PsResult)
    ctx.emit(result.to_json(), lambda: render_ps(result))


@click.command()
@click.argument("counts", nargs=-1, metavar="NAME=N...")
@click.option("--reset", is_flag=True, help="Back to the counts of the release's settings.")
@WAIT
@pass_ctx
def scale(ctx: Context, counts: tuple[str, ...], reset: bool, wait: bool) -> None:
    """Run N instances of process NAME now, and after every deploy, rollback and daemon
    restart until changed (`--reset`: the release's settings again)."""
    from relman.results import ScaleResult
    from relman.views import parse_counts, render_counts

    if not counts and not reset:
        raise UsageError("relman scale: name at least one NAME=N, or --reset")
    result = ctx.call("scale", ScaleResult, counts=parse_counts(counts), reset=reset,
                      wait=wait)
    ctx.emit(result.to_json(), lambda: render_counts(result.counts))


@click.command()
@click.argument("release", required=False)
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0),
              help="How many lines to show.")
@click.option("-p", "--process", metavar="NAME", help="A process's output ([processes.NAME]); "
              "web is the server's.")
@pass_ctx
def logs(ctx: Context, release: str | None, follow_: bool, lines: int, process: str | None
         ) -> None:
    """The app server's output (of the live release, or RELEASE), or a process's."""
    from relman.views import follow, server_log

    path = server_log(ctx.root_only, release, process)
    for line in follow(path, lines=lines, keep_going=follow_):
        click.echo(line)


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def run(ctx: Context, command: tuple[str, ...]) -> None:
    """Run COMMAND in the live release's directory and environment (venv, env, env_file),
    as this process: its output, terminal and exit status are the command's."""
    from relman.oneoff import run_in_live_release

    run_in_live_release(ctx.config, command, os.environ)
