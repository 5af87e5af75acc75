"""The relman commands: click commands over the control socket (relman.cli.main parses
the command line, and turns errors into output and exit codes)."""

from __future__ import annotations

import getpass
import os
import time
from typing import TYPE_CHECKING

import click

from relman import __version__
from relman.cli import processes
from relman.cli.context import WAIT, Context, pass_ctx
from relman.cli.daemon import start_daemon
from relman.cli.failures import error_handler
from relman.cli.fleet import fleet
from relman.cli.params import COUNT, number_at_least_0, positive_number
from relman.cli.session import session
from relman.cli.ssh import SSH_ALLOWED, ssh_command
from relman.errors import UsageError

if TYPE_CHECKING:
    from relman.results import PrepareResult

__all__ = ["SSH_ALLOWED", "cli", "main"]

# Every command starts with these imports, over SSH too: what only some commands need (the
# release store, the views, the daemon's answers, structlog, asyncio) is imported inside them.

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
    start_daemon(ctx.config.path, as_json=ctx.json)


@cli.command()
@click.argument("ref")
@click.option("--prepare", is_flag=True,
              help="Stop before the switch: leave the healthy candidate on run/next.sock "
                   "(until `relman abort ID` or swap.prepare_timeout) and print its id.")
@click.option("--no-release-phase", is_flag=True,
              help="With --prepare: skip release.commands (another host runs them).")
@click.option("--build-only", is_flag=True,
              help="Fetch and build REF into its release and print its id: no release "
                   "phase, nothing started or switched.")
@WAIT
@pass_ctx
def deploy(ctx: Context, ref: str, prepare: bool, no_release_phase: bool, build_only: bool,
           wait: bool) -> None:
    """Fetch REF, build it, run the release phase and swap it in."""
    from relman.results import BuildResult, DeployResult, PrepareResult

    if build_only and (prepare or no_release_phase):
        raise click.UsageError("--build-only cannot be used with --prepare or "
                               "--no-release-phase")
    if no_release_phase and not prepare:
        raise click.UsageError("--no-release-phase needs --prepare")
    if build_only:
        built = ctx.call("deploy", BuildResult, ref=ref, wait=wait, build_only=True)
        ctx.emit(built.to_json(), lambda: built.release)  # its own line: machine readable
    elif prepare:
        prepared = ctx.call("deploy", PrepareResult, ref=ref, wait=wait, prepare=True,
                            no_release_phase=no_release_phase)
        _emit_prepared(ctx, prepared)
    else:
        result = ctx.call("deploy", DeployResult, ref=ref, wait=wait)
        ctx.emit(result.to_json(), lambda: f"deployed {result.ref} as {result.release}")


def _emit_prepared(ctx: Context, prepared: PrepareResult) -> None:
    """The prepared release's id alone on the last line (machine readable), after a line
    saying it is live already when it is."""
    ctx.emit(prepared.to_json(), lambda: (f"release {prepared.release} is live already\n"
                                          if prepared.live else "") + prepared.release)


@cli.command()
@click.argument("release")
@click.option("--keep-warm", type=float, metavar="SECONDS", callback=number_at_least_0,
              help="Keep the old release warm at least this long (swap.keep_warm if "
                   "longer).")
@WAIT
@pass_ctx
def switch(ctx: Context, release: str, keep_warm: float | None, wait: bool) -> None:
    """Switch to the candidate `deploy --prepare` left for RELEASE (health checked again)."""
    from relman.results import DeployResult

    _release_id("switch", release)
    result = ctx.call("switch", DeployResult, release=release, keep_warm=keep_warm, wait=wait)
    ctx.emit(result.to_json(), lambda: f"switched to {result.release}")


def _release_id(command: str, release: str) -> None:
    from relman.releases.ids import is_release_id

    if not is_release_id(release):
        raise UsageError(f"{command} {release!r}: not a release id (like "
                         "20261123T031500Z-1a2b3c4)")


@cli.command()
@click.argument("release")
@WAIT
@pass_ctx
def abort(ctx: Context, release: str, wait: bool) -> None:
    """Stop the candidate `deploy --prepare` left for RELEASE; the live release stays."""
    from relman.results import AbortResult

    _release_id("abort", release)
    result = ctx.call("abort", AbortResult, release=release, wait=wait)
    ctx.emit(result.to_json(), lambda: f"aborted {result.release} ({result.candidate} "
             "stopped)")


@cli.command()
@click.argument("release", required=False)
@click.option("--prepare", is_flag=True,
              help="Stop before the switch, as deploy --prepare: leave the healthy "
                   "candidate (the warm instance, if any) on run/next.sock and print its id.")
@WAIT
@pass_ctx
def rollback(ctx: Context, release: str | None, prepare: bool, wait: bool) -> None:
    """Swap to the previous known-good release (or RELEASE)."""
    from relman.results import PrepareResult, RollbackResult

    if prepare:
        _emit_prepared(ctx, ctx.call("rollback", PrepareResult, release=release, wait=wait,
                                     prepare=True))
        return
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
@click.option("--since", type=float, callback=positive_number, metavar="HOURS",
              help="Only the last HOURS hours.")
@click.option("-n", "--limit", default=50, show_default=True, type=COUNT,
              help="At most N entries.")
@pass_ctx
def history(ctx: Context, release: str | None, event: str | None, since: float | None,
            limit: int) -> None:
    """The audit log: what happened, when, by whom."""
    from relman.releases import history as audit
    from relman.views import history_detail, time_ago

    since_ts = time.time() - since * 3600 if since else None
    entries = list(audit.read(ctx.root_only.history, event=event, release=release, since=since_ts))
    entries = entries[len(entries) - limit:] if limit < len(entries) else entries
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
@click.option("--listen", default="80", show_default=True, help="nginx listen value (plain http).")
@click.option("--server-name", help="nginx server_name  [default: the --letsencrypt DOMAIN, "
              "else _]")
@click.option("--tls", "tls_paths", nargs=2, metavar="CERT KEY",
              help="Serve https with this certificate (chain) and key; redirect http to it.")
@click.option("--letsencrypt", metavar="DOMAIN",
              help="As --tls with certbot's certificate for DOMAIN, plus its ACME webroot.")
@click.option("--letsencrypt-dir", metavar="DIR", help="Where certbot keeps DOMAIN/fullchain"
              ".pem and privkey.pem  [default: /etc/letsencrypt/live]")
@click.option("--acme-webroot", metavar="DIR", help="certbot's --webroot path, served at "
              "/.well-known/acme-challenge/  [default: /var/www/letsencrypt]")
@click.option("--tls-listen", default="443", show_default=True, help="nginx listen value "
              "for https (ssl is added).")
@click.option("--ipv6", is_flag=True, help="Also listen on [::] for each port.")
@click.option("--client-max-body-size", metavar="SIZE", help="Largest request body, e.g. 20m.")
@click.option("--nginx-version", metavar="VERSION", help="Render for this nginx version "
              "[default: what `nginx -v` says here]")
@pass_ctx
def nginx_config(ctx: Context, listen: str, server_name: str | None,
                 tls_paths: tuple[str, str] | None, letsencrypt: str | None,
                 letsencrypt_dir: str | None, acme_webroot: str | None, tls_listen: str,
                 ipv6: bool, client_max_body_size: str | None, nginx_version: str | None
                 ) -> None:
    """Print the nginx server block for this app."""
    from relman import nginx_tls
    from relman.nginxconf import render_server_block

    server = ctx.config.server
    if server.kind == "none":
        raise UsageError(f'{ctx.path}: server.kind = "none": there is no web server for nginx '
                         "to proxy")
    tls, acme, warning = nginx_tls.choose_tls(
        tls_paths=tls_paths, letsencrypt=letsencrypt, letsencrypt_dir=letsencrypt_dir,
        acme_webroot=acme_webroot, listen=tls_listen, nginx_version=nginx_version)
    protocol = "uwsgi" if server.kind == "uwsgi" and server.protocol == "uwsgi" else "http"
    text = render_server_block(name=ctx.config.app.name, root=ctx.root.root,
                               protocol=protocol, listen=listen,
                               server_name=server_name or letsencrypt or "_", tls=tls,
                               acme=acme, ipv6=ipv6,
                               client_max_body_size=client_max_body_size or "",
                               static=ctx.config.static)
    if warning:
        click.echo(f"relman: warning: {warning}", err=True)
    ctx.emit({"protocol": protocol, "tls": tls is not None, "config": text}, text.rstrip())


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


for command in (processes.ps, processes.scale, processes.logs, processes.run, ssh_command,
                session, fleet):
    cli.add_command(command)


def main(args: list[str]) -> None:
    """Run the command *args* (global options hoisted) asks for."""
    with error_handler("--json" in args):
        cli.main(args=args, prog_name="relman", standalone_mode=False)
