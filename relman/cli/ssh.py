"""`relman ssh-command`, the forced command of a CI key in authorized_keys: it runs
SSH_ORIGINAL_COMMAND when that is an allowed relman command for this key's app."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from relman.cli.context import Context
from relman.cli.failures import error_handler
from relman.config_search import hoist_global_options
from relman.errors import RelmanError, UsageError
from relman.who import WHO_LABEL, WHO_LABEL_RULE

SSH_ALLOWED = frozenset({"deploy", "switch", "abort", "rollback", "releases", "status", "ps",
                         "history", "logs", "session"})
# Global options a key may repeat (`ssh deploy@web1 relman --app shop deploy v1`, as README
# shows for a login): --app and --config only when they name this key's app, and --json.
SSH_GLOBAL_OPTIONS = ("--app", "--config", "--json")


@click.command("ssh-command")
@click.option("--as", "as_name", metavar="NAME",
              help="Record NAME as who ran the jobs of this key (letters, digits, . _ @ -; "
                   "at most 64), beside the login user.")
@click.pass_context
def ssh_command(click_ctx: click.Context, as_name: str | None) -> None:
    """Forced command for authorized_keys: run SSH_ORIGINAL_COMMAND if it is allowed."""
    ctx: Context = click_ctx.obj
    if as_name is not None and not WHO_LABEL.fullmatch(as_name):
        raise UsageError(f"ssh-command --as {as_name!r}: not {WHO_LABEL_RULE}")
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    # Asked for with --json, a refusal too is JSON on stdout, as any error of the command.
    ctx.json = ctx.json or _asks_json(original)
    ctx.who_as = as_name
    run_allowed(click_ctx, original, "ssh-command", SSH_ALLOWED)


def run_allowed(click_ctx: click.Context, original: str, where: str,
                allowed: frozenset[str]) -> None:
    """Run the command line *original* (`relman [--app A] [--json] COMMAND ARGS`, shell
    quoted) when its COMMAND is one of *allowed* and its --app/--config name this app;
    else a one-line UsageError naming *where* it was refused. Ends as the command does:
    SystemExit with its exit code when it fails."""
    ctx: Context = click_ctx.obj
    with error_handler(ctx.json):
        try:
            words = shlex.split(original)
        except ValueError:
            raise UsageError(f"{where}: cannot parse {_what(where)}") from None
        if words[:1] == ["relman"]:
            words = words[1:]
        _, words = take_global_options(ctx, hoist_global_options(words), where)
        group = click_ctx.find_root().command
        commands = group.commands if isinstance(group, click.Group) else {}
        if not words or words[0] not in allowed or words[0] not in commands:
            raise UsageError(f"{where}: {original or '(no command)'!r} is not allowed; "
                             f"allowed: {', '.join(sorted(allowed))}")
        command = commands[words[0]]
        try:
            sub = command.make_context(words[0], words[1:], parent=click_ctx)
        except click.UsageError as e:  # one line, not click's usage block naming ssh-command
            raise UsageError(f"{where}: {original!r}: {e.format_message()}") from None
        with sub:
            command.invoke(sub)


def _asks_json(original: str) -> bool:
    try:
        words = shlex.split(original)
    except ValueError:
        return False
    return "--json" in (words[:words.index("--")] if "--" in words else words)


def _what(where: str) -> str:
    return "SSH_ORIGINAL_COMMAND" if where == "ssh-command" else "the line"


def take_global_options(ctx: Context, words: list[str], where: str = "ssh-command"
                        ) -> tuple[bool, list[str]]:
    """(--json given, *words* without the global options in front), once each --app and
    --config is seen to name this key's app; a UsageError naming any other option there."""
    as_json = False
    while words and words[0].startswith("-"):
        option, equals, value = words[0].partition("=")
        if option == "--json":
            if equals:
                raise UsageError(f"{where}: {words[0]!r}: --json takes no value")
            as_json, words = True, words[1:]
            continue
        if option not in SSH_GLOBAL_OPTIONS:
            raise UsageError(f"{where}: {words[0]!r} is not allowed before the command: "
                             "the forced command fixes relman's options (allowed: --app and "
                             "--config naming this key's app, --json)")
        if equals:
            words = words[1:]
        elif len(words) > 1:
            value, words = words[1], words[2:]
        else:
            raise UsageError(f"{where}: {option} needs a value")
        if option == "--app":
            check_app(ctx, value, where)
        else:
            check_config(ctx, value, where)
    return as_json, words


def app_name(ctx: Context) -> str | None:
    """This key's app's name from its config; None when the config is invalid."""
    try:
        return ctx.config.app.name
    except RelmanError:
        return None


def check_app(ctx: Context, name: str, where: str = "ssh-command") -> None:
    """--app NAME over ssh: NAME must name this key's app: the forced command's --app, the
    config file's name (/etc/relman/NAME.toml, relman@NAME) or app.name; else a UsageError.
    Only checked: the config stays the forced command's."""
    if name in (ctx.app, ctx.path.stem, app_name(ctx)):
        return
    served = ctx.app or ctx.path.stem
    raise UsageError(f"{where}: --app {name}: this key serves app {served}")


def check_config(ctx: Context, path: str, where: str = "ssh-command") -> None:
    """--config PATH over ssh: PATH must be this key's config file; else a UsageError."""
    if (Path.cwd() / path).resolve() != ctx.path.resolve():
        # Not naming this key's file: the key holder need not learn where configs live.
        raise UsageError(f"{where}: --config {path}: not this key's config file (the "
                         "forced command names it)")
