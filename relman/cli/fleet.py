"""`relman fleet deploy|rollback|status|releases`: one release on many hosts, over the user's
own ssh (DESIGN section 9). The config is found as for any command (--config, --app,
RELMAN_CONFIG, ./relman.toml); it needs `[app] name` and `[fleet]`. Every command line
imports this module, a fleet host's several times a run: what only the coordinator needs
(asyncio, the coordinator) is imported inside its commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import click

from relman.cli.context import Context, pass_ctx

if TYPE_CHECKING:
    from relman.config_fleet import FleetConfig
    from relman.fleet.report import FleetReport
    from relman.fleet.run import FleetRun

__all__ = ["fleet"]


@click.group()
def fleet() -> None:
    """Many hosts over ssh: deploy, rollback, status, releases ([fleet] in the config)."""


ALLOW_UNREACHABLE = click.option(
    "--allow-unreachable", is_flag=True,
    help="Go on without the hosts ssh cannot reach (exit 255); by default nobody switches.")


@fleet.command("deploy")
@click.argument("ref")
@ALLOW_UNREACHABLE
@pass_ctx
def fleet_deploy(ctx: Context, ref: str, allow_unreachable: bool) -> None:
    """Prepare REF on every host, then switch them all (canary, together or rolling)."""
    from relman.releases.refs import validate_ref

    validate_ref(ref)
    _run_fleet(ctx, allow_unreachable, lambda run: run.deploy(ref))


@fleet.command("rollback")
@click.argument("release", required=False)
@ALLOW_UNREACHABLE
@pass_ctx
def fleet_rollback(ctx: Context, release: str | None, allow_unreachable: bool) -> None:
    """Prepare the previous release (or RELEASE) on every host, warm where it is, then
    switch them all."""
    if release is not None:
        from relman.releases.ids import is_release_id

        if not is_release_id(release):
            raise click.UsageError(f"{release!r}: not a release id (like "
                                   "20261123T031500Z-1a2b3c4)")
    _run_fleet(ctx, allow_unreachable, lambda run: run.rollback(release))


@fleet.command("status")
@pass_ctx
def fleet_status(ctx: Context) -> None:
    """Each host's live release, health and daemon; mixed releases flagged (exit 1)."""
    from relman.errors import FleetFailed
    from relman.fleet.views import fleet_status as ask
    from relman.fleet.views import render_status

    status = ask(_config(ctx))
    ctx.emit(status, lambda: render_status(status))
    if status["problems"]:
        raise FleetFailed("fleet status: " + "; ".join(status["problems"]))


@fleet.command("releases")
@pass_ctx
def fleet_releases(ctx: Context) -> None:
    """Every release on any host, with each host's mark: live, target, built, failed, -."""
    from relman.fleet.views import fleet_releases as ask
    from relman.fleet.views import render_releases

    config = _config(ctx)
    data = ask(config)
    ctx.emit(data, lambda: render_releases(data, config.hosts))
    if data["errors"]:
        from relman.errors import FleetFailed

        raise FleetFailed("fleet releases: " + "; ".join(
            f"{host}: {reason}" for host, reason in data["errors"].items()))


def _config(ctx: Context) -> FleetConfig:
    from relman.fleet.config import load_fleet_config

    return load_fleet_config(ctx.path).fleet


def _run_fleet(ctx: Context, allow_unreachable: bool,
               job: Callable[[FleetRun], Awaitable[FleetReport]]) -> None:
    """Run *job* (deploy or rollback) on a FleetRun, its lines and table printed; exit 1
    (FleetFailed) unless the fleet ended where it was asked to."""
    from relman.errors import FleetFailed
    from relman.fleet.report import render_report
    from relman.fleet.run import FleetRun

    config = _config(ctx)
    width = max(len(h) for h in (*config.hosts, "fleet"))

    output = [True]  # False once stdout is gone: the fleet is put in order all the same

    def echo(host: str, step: str, message: str) -> None:
        if ctx.json:
            line = json.dumps({"type": "progress", "host": host, "step": step,
                               "message": message})
        else:
            line = f"{host or 'fleet':<{width}}  " + (f"[{step}] " if step else "") + message
        if output[0]:
            try:
                click.echo(line)
                sys.stdout.flush()
            except OSError:  # a closed pipe (`| head`), a terminal gone
                output[0] = False

    import asyncio
    import signal

    async def main() -> FleetReport:
        run = FleetRun(config, echo, allow_unreachable=allow_unreachable)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, run.stop)
        return await job(run)

    report = asyncio.run(main())
    ctx.emit(report.to_json(), lambda: render_report(report))
    if report.failed:
        raise FleetFailed(f"fleet {report.command} {report.ref}: {report.reason}")
