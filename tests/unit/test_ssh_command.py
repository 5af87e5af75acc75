"""ssh-command as people type after `ssh deploy@web1` (issue 11): a leading `relman` with
the global options that name this key's app, --json anywhere, and `--as NAME` for who; the
command run in-process with SSH_ORIGINAL_COMMAND set, which is what a forced command sees."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from relman.errors import UsageError
from relman.releases import AppRoot
from relman.releases import history as audit
from relman.who import who_of
from testing.session_output import session_answers
from tests.unit.test_broken_config import GOOD, run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """/…/etc/shop.toml for app "shop", whose root has one history entry."""
    root = AppRoot(tmp_path / "shop")
    root.create()
    audit.record(root.history, "deployed", app="shop", release="r1", ref="v1")
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "shop.toml"
    path.write_text(GOOD.format(root=root.root) + '[server]\napp = "shop.wsgi"\n')
    return path


def ssh(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path,
        original: str, *forced: str) -> tuple[int, str, str]:
    """`relman --config CONFIG ssh-command FORCED...` with SSH_ORIGINAL_COMMAND=*original*."""
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", original)
    monkeypatch.chdir(config.parent)
    return run(capsys, "--config", str(config), "ssh-command", *forced)


@pytest.mark.parametrize("original", [
    "relman --app shop history", "relman history --app shop", "relman history --app=shop",
    "relman --app=shop history -n 1", "--app shop history",
    "relman --config shop.toml history", "relman --config ./shop.toml history",
    "relman history --config={config}", "relman --app shop --config {config} history"])
def test_global_options_naming_this_keys_app_are_accepted(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path,
        original: str) -> None:
    """README's `ssh deploy@web1 relman --app shop deploy v1` works through the forced
    command: --app with this app's name, --config with this key's file, before or after the
    command."""
    code, out, err = ssh(capsys, monkeypatch, config, original.format(config=config))
    assert (code, err) == (0, "")
    assert "deployed" in out


def test_app_names_of_the_file_and_of_an_invalid_config_are_accepted(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        config: Path) -> None:
    """--app may give the config file's name (/etc/relman/NAME.toml, the unit's instance)
    where app.name differs, and does while the config is invalid (the daemon serves on with
    its last good one)."""
    config.write_text(config.read_text().replace('name = "shop"', 'name = "shop-web"'))
    for name in ("shop", "shop-web"):
        code, _out, err = ssh(capsys, monkeypatch, config, f"relman --app {name} history")
        assert (code, err) == (0, "")
    config.write_text(config.read_text() + "bogus = 1\n")
    code, out, err = ssh(capsys, monkeypatch, config, "relman --app shop history")
    assert (code, "deployed" in out) == (0, True)
    assert err.startswith("relman: warning:"), err


@pytest.mark.parametrize("original", ["relman --json history", "relman history --json",
                                      "--json history -n 1"])
def test_json_is_accepted_anywhere(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, config: Path,
                                   original: str) -> None:
    """--json over ssh gives JSON, as in the forced command."""
    code, out, err = ssh(capsys, monkeypatch, config, original)
    assert (code, err) == (0, "")
    assert json.loads(out)[0]["event"] == "deployed"


def test_json_errors_are_json(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    """A usage error of a command asked for with --json is a JSON error, exit 2."""
    code, out, err = ssh(capsys, monkeypatch, config, "relman --json history -n -5")
    assert (code, err) == (2, "")
    error = json.loads(out)["error"]
    assert (error["code"], error["exit_code"]) == ("usage", 2)
    assert "'-n' / '--limit': -5" in error["message"]


@pytest.mark.parametrize(("original", "message"), [
    ("relman --json --app other history", "--app other: this key serves app shop"),
    ("relman --app other history --json", "--app other: this key serves app shop"),
    ("relman history --json --config=/etc/passwd",
     "--config /etc/passwd: not this key's config file (the forced command names it)"),
    ("relman --json run id", "'relman --json run id' is not allowed; allowed: abort, "
     "deploy, history, logs, ps, releases, rollback, session, status, switch"),
])
def test_refusals_asked_for_with_json_are_json(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, config: Path,
                                               original: str, message: str) -> None:
    """A refusal of a command line that asks for --json is a JSON error on stdout, exit 2,
    as every other error of that command line is (a CI script parses stdout)."""
    code, out, err = ssh(capsys, monkeypatch, config, original)
    assert (code, err) == (2, "")
    error = json.loads(out)["error"]
    assert (error["code"], error["message"]) == ("usage", f"ssh-command: {message}")


@pytest.mark.parametrize(("original", "message"), [
    ("relman --app other history", "--app other: this key serves app shop"),
    ("relman history --app other", "--app other: this key serves app shop"),
    ("relman deploy --app=other v1", "--app other: this key serves app shop"),
    ("relman --app ../etc/shop history", "--app ../etc/shop: this key serves app shop"),
    ("relman --config /etc/passwd history",
     "--config /etc/passwd: not this key's config file (the forced command names it)"),
    ("relman history --config=other.toml",
     "--config other.toml: not this key's config file (the forced command names it)"),
    ("relman --app", "--app needs a value"),
    ("relman --version", "'--version' is not allowed before the command: the forced command "
     "fixes relman's options (allowed: --app and --config naming this key's app, --json)"),
    ("relman -h history", "'-h' is not allowed before the command: the forced command "
     "fixes relman's options (allowed: --app and --config naming this key's app, --json)"),
    ("relman --as admin deploy v1", "'--as' is not allowed before the command: the forced "
     "command fixes relman's options (allowed: --app and --config naming this key's app, "
     "--json)"),
    ("relman -- history", "'--' is not allowed before the command: the forced command "
     "fixes relman's options (allowed: --app and --config naming this key's app, --json)"),
    ("relman --json=1 history", "'--json=1': --json takes no value"),
], ids=["app-other", "app-other-after", "app-other-equals", "app-path", "config-other",
        "config-other-after", "app-without-value", "version", "help", "as", "dashdash",
        "json-value"])
def test_other_global_options_are_refused(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, config: Path,
                                          original: str, message: str) -> None:
    """--app or --config naming anything else, and any other option before the command, are
    refused in one line naming the option, exit 2, before anything runs."""
    code, out, err = ssh(capsys, monkeypatch, config, original)
    assert (code, out, err) == (2, "", f"relman: error: ssh-command: {message}\n")


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ci;id", "ci/deploy", "düsseldorf",
                                  "ci\n", "$(id)"])
def test_as_takes_a_short_plain_name(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, config: Path,
                                     name: str) -> None:
    """ssh-command --as NAME: a NAME that is not 1 to 64 letters, digits, . _ @ - is a
    usage error, exit 2, whatever the key asks."""
    code, out, err = ssh(capsys, monkeypatch, config, "relman history", "--as", name)
    assert (code, out) == (2, "")
    assert err == (f"relman: error: ssh-command --as {name!r}: not a name of 1 to 64 "
                   "letters, digits, '.', '_', '@' or '-'\n")


@pytest.mark.parametrize("name", ["ci-deploy", "x" * 64, "ci@example.com", "A.b_c-9"])
def test_as_names_that_are_fine(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch, config: Path,
                                name: str) -> None:
    """Short plain names (an e-mail address among them) pass."""
    code, _out, err = ssh(capsys, monkeypatch, config, "relman history", "--as", name)
    assert (code, err) == (0, "")


def test_who_with_a_label_keeps_the_peers_login() -> None:
    """The daemon records `LABEL (login of the peer's uid) via ssh from ADDR`: the label
    says which key, the socket's peer uid who logged in; the client's own user claim is
    not used then."""
    login = pwd.getpwuid(os.getuid()).pw_name
    client = {"user": "someone-else", "ssh": "203.0.113.7", "as": "ci-deploy"}
    assert who_of(client, os.getuid()) == f"ci-deploy ({login}) via ssh from 203.0.113.7"
    assert who_of({"user": "deploy", "ssh": ""}, 1000) == "deploy"
    assert who_of({}, 4242) == "uid 4242"
    assert who_of({"as": "ci", "ssh": ""}, 2**31 - 2) == f"ci (uid {2**31 - 2})"


@pytest.mark.parametrize("label", ["", "a b", 7, None, "x" * 65, ["ci"]])
def test_who_refuses_a_bad_label(label: object) -> None:
    """The daemon checks the label again: a client other than the CLI may send anything."""
    client = {"user": "deploy", "as": label}
    if label is None:
        assert who_of(client, 0) == "deploy"
        return
    with pytest.raises(UsageError, match="--as"):
        who_of(client, 0)


RID = "20261123T031500Z-1a2b3c4"


@pytest.mark.parametrize(("original", "code", "message"), [
    # Allowed: they get as far as the daemon (none runs here: exit 3).
    ("relman deploy v2 --prepare", 3, "daemon"),
    ("relman deploy v2 --prepare --no-release-phase", 3, "daemon"),
    ("relman --json deploy --prepare v2", 3, "daemon"),
    (f"relman abort {RID}", 3, "daemon"),
    (f"relman abort --wait {RID}", 3, "daemon"),
    ("relman deploy v2 --build-only", 3, "daemon"),
    ("relman --json deploy --build-only v2", 3, "daemon"),
    ("relman rollback --prepare", 3, "daemon"),
    (f"relman rollback {RID} --prepare", 3, "daemon"),
    (f"relman --json rollback --prepare --wait {RID}", 3, "daemon"),
    # Refused before any request, exit 2.
    ("relman deploy v2 --no-release-phase", 2, "--no-release-phase needs --prepare"),
    ("relman deploy v2 --prepare --keep-warm 5", 2, "No such option '--keep-warm'"),
    ("relman deploy v2 --build-only --prepare", 2, "--build-only cannot be used with"),
    ("relman deploy v2 --build-only --no-release-phase", 2, "--build-only cannot be used"),
    ("relman rollback --prepare --no-release-phase", 2, "No such option"),
    ("relman rollback --prepare=yes", 2, "does not take a value"),
    ("relman abort", 2, "Missing argument 'RELEASE'"),
    ("relman abort ../../etc", 2, "'../../etc': not a release id"),
    (f"relman abort {RID}/..", 2, "not a release id"),
    (f"relman abort {RID} {RID}", 2, "unexpected extra argument"),
    (f"relman switch {RID}", 3, "daemon"),
    (f"relman switch {RID} --keep-warm 60", 3, "daemon"),
    (f"relman switch {RID} --keep-warm 0", 3, "daemon"),
    (f"relman switch {RID} --keep-warm -1", 2, "not a finite number of at least 0"),
    (f"relman switch {RID} --keep-warm inf", 2, "not a finite number of at least 0"),
    (f"relman switch {RID} --keep-warm soon", 2, "'soon' is not a valid float"),
    ("relman switch v2", 2, "'v2': not a release id"),
    ("relman switch -- -x", 2, "not a release id"),
    (f"relman run -- {RID}", 2, "is not allowed; allowed: abort, deploy"),
])
def test_prepare_and_abort_over_ssh(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, config: Path,
                                    original: str, code: int, message: str) -> None:
    """`deploy REF --prepare [--no-release-phase]`, `deploy REF --build-only`, `rollback
    [RELEASE] --prepare`, `switch ID [--keep-warm SECONDS]` and `abort ID` (issue 10) pass
    the forced command; a release id of another shape, or a bad option or value, exits 2
    in one line."""
    got, out, err = ssh(capsys, monkeypatch, config, original)
    assert got == code, (out, err)
    assert message in err or message in out, (out, err)
    if code == 2:
        assert len((err or out).strip().splitlines()) == 1, (out, err)


def test_session_answers_each_line_and_refuses_bad_ones_in_one_json_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        config: Path) -> None:
    """`relman session` through the forced command: blank lines are skipped; each other
    line ends with a done line carrying its exit code; a line that cannot be parsed, names
    another app, nests a session, follows logs or misuses an option is one JSON error with
    exit 2, and the session goes on to the next line."""
    import io
    import sys

    lines = ["", "history -n 1", "'history", "--app other history", "session", "logs -f",
             "history -n -5", "relman --json history -n 1"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "\n".join(lines).encode() + b"\n")))
    code, out, err = ssh(capsys, monkeypatch, config, "relman session", "--as", "ci")
    assert (code, err) == (0, "")
    answers = session_answers(out)
    assert [a[-1]["exit"] for a in answers] == [0, 2, 2, 2, 2, 2, 0]
    assert answers[0][0][0]["event"] == "deployed"
    messages = [a[0]["error"]["message"] for a in answers[1:6]]
    assert messages[:4] == ["session: cannot parse the line",
                            "session: --app other: this key serves app shop",
                            "session: 'session' is not allowed; allowed: abort, deploy, "
                            "history, ps, releases, rollback, status, switch",
                            "session: 'logs -f' is not allowed; allowed: abort, deploy, "
                            "history, ps, releases, rollback, status, switch"]
    assert "'-n' / '--limit': -5" in messages[4]
