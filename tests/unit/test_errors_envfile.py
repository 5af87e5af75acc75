"""The error tree's codes and exit codes, env files, and secret redaction in log events."""

from __future__ import annotations

import errno
import inspect
import re
from pathlib import Path

import pytest

from relman import errors
from relman.envfile import read_env_file
from relman.errors import (
    BY_CODE,
    BadAnswer,
    BadRef,
    BuildFailed,
    ConfigError,
    DaemonUnreachable,
    DeployFailed,
    FetchFailed,
    LiveCheckFailed,
    LockHeld,
    PreviewFailed,
    ReleasePhaseFailed,
    RelmanError,
    StateWriteFailed,
    Unhealthy,
    UsageError,
    error_from_dict,
)
from relman.logs import REDACTED, redact_secrets

ALL_ERRORS: list[type[RelmanError]] = [
    cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, RelmanError)]


def test_every_error_class_is_registered_under_a_unique_kebab_code() -> None:
    """Each RelmanError class has its own stable kebab-case code, and BY_CODE maps it back."""
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in codes), codes
    assert {code: BY_CODE.get(code) for code in codes} == {cls.code: cls for cls in ALL_ERRORS}


@pytest.mark.parametrize(
    ("cls", "exit_code"),
    [
        pytest.param(RelmanError, 1, id="base"),
        pytest.param(UsageError, 2, id="usage"),
        pytest.param(ConfigError, 2, id="config"),
        pytest.param(BadRef, 2, id="bad-ref"),
        pytest.param(DaemonUnreachable, 3, id="daemon-unreachable"),
        pytest.param(LockHeld, 4, id="lock-held"),
        pytest.param(DeployFailed, 1, id="deploy-failed"),
        pytest.param(FetchFailed, 1, id="fetch-failed"),
        pytest.param(BuildFailed, 1, id="build-failed"),
        pytest.param(ReleasePhaseFailed, 1, id="release-phase-failed"),
        pytest.param(Unhealthy, 1, id="unhealthy"),
        pytest.param(PreviewFailed, 1, id="preview-failed"),
        pytest.param(LiveCheckFailed, 1, id="live-check-failed"),
        pytest.param(StateWriteFailed, 1, id="state-write-failed"),
    ],
)
def test_exit_codes(cls: type[RelmanError], exit_code: int) -> None:
    """Exit codes follow DESIGN: 1 failed, 2 usage, 3 daemon unreachable, 4 lock held."""
    assert cls.exit_code == exit_code


@pytest.mark.parametrize(
    ("errnum", "says"),
    [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
     (errno.EROFS, "read-only file system"), (errno.EIO, "input/output error")],
)
def test_a_refused_write_is_state_write_failed_naming_the_path(errnum: int, says: str) -> None:
    """writing() turns the file system's refusals into StateWriteFailed, exit 1, naming the
    path; any other OSError passes through as it is."""
    with pytest.raises(StateWriteFailed) as info, errors.writing(Path("/srv/state/x.json")):
        raise OSError(errnum, "refused")
    assert info.value.message == f"{says} (/srv/state/x.json)"
    assert info.value.to_dict()["file"] == "/srv/state/x.json"
    with pytest.raises(IsADirectoryError), errors.writing(Path("/srv/state/x.json")):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")


def test_deploy_failures_are_one_family() -> None:
    """Every step failure of a deploy is a DeployFailed."""
    for cls in (FetchFailed, BuildFailed, ReleasePhaseFailed, Unhealthy, PreviewFailed,
                LiveCheckFailed):
        assert issubclass(cls, DeployFailed)


def make_error(cls: type[RelmanError]) -> RelmanError:
    """An instance of *cls* with every field set."""
    if cls is ConfigError:
        err: RelmanError = ConfigError(Path("/etc/relman/shop.toml"), "server.app", "required")
    elif cls is BadRef:
        err = BadRef("a..b", "must not contain '..'")
    elif cls is StateWriteFailed:
        err = StateWriteFailed(Path("/srv/shop/state/journal.json"), errno.ENOSPC)
    elif cls is BadAnswer:
        err = BadAnswer("servers[0].pid", "missing")
    else:
        return cls(f"{cls.__name__} happened", hint="try again", tail="line 1\nline 2")
    err.hint, err.tail = "try again", "line 1\nline 2"
    return err


@pytest.mark.parametrize("code", sorted(BY_CODE))
def test_error_round_trips_through_dict(code: str) -> None:
    """error_from_dict(e.to_dict()) rebuilds the class, message, hint, tail and exit code."""
    cls = BY_CODE[code]
    original = make_error(cls)
    rebuilt = error_from_dict(original.to_dict())
    assert type(rebuilt) is cls
    assert (rebuilt.message, rebuilt.hint, rebuilt.tail, rebuilt.exit_code) == (
        original.message, original.hint, original.tail, original.exit_code)
    assert str(rebuilt) == str(original)


def test_error_with_unknown_code_rebuilds_as_base() -> None:
    """An error code this client does not know (a newer daemon) still becomes a RelmanError."""
    rebuilt = error_from_dict({"code": "from-the-future", "message": "m"})
    assert type(rebuilt) is RelmanError
    assert (rebuilt.message, rebuilt.hint, rebuilt.tail, rebuilt.exit_code) == ("m", None, "", 1)


def test_config_error_names_file_key_and_reason() -> None:
    """A ConfigError's message is `file: key: reason`."""
    err = ConfigError(Path("/etc/relman/shop.toml"), "server.app", "required")
    assert str(err) == "/etc/relman/shop.toml: server.app: required"
    assert (err.file, err.key, err.reason) == ("/etc/relman/shop.toml", "server.app", "required")


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.env"
    path.write_text(text)
    return path


def test_env_file_parses_comments_export_and_quotes(tmp_path: Path) -> None:
    """Blank lines and comments are skipped, `export` is allowed, quotes are removed."""
    path = write_env(tmp_path, "\n".join([
        "# database",
        "",
        "DATABASE_URL=postgres://u:p@db/shop",
        "export DJANGO_SETTINGS_MODULE=shop.settings",
        "  SPACED = padded  ",
        "DOUBLE=\"two words\"",
        "SINGLE='it has # and $HOME'",
        "EMPTY=",
        "EMPTY_QUOTED=\"\"",
        "EQUALS=a=b=c",
        "   # indented comment",
    ]) + "\n")
    assert read_env_file(path) == {
        "DATABASE_URL": "postgres://u:p@db/shop",
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "SPACED": "padded",
        "DOUBLE": "two words",
        "SINGLE": "it has # and $HOME",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "EQUALS": "a=b=c",
    }


SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(f"{SECRET}", "expected KEY=VALUE", id="no-equals"),
        pytest.param(f"MY KEY={SECRET}", "expected KEY=VALUE", id="space-in-key"),
        pytest.param(f"1KEY={SECRET}", "expected KEY=VALUE", id="key-starts-with-digit"),
        pytest.param(f"={SECRET}", "expected KEY=VALUE", id="empty-key"),
        pytest.param(f'PASSWORD="{SECRET}', "unbalanced quotes", id="unbalanced-quote"),
    ],
)
def test_env_file_bad_line_names_line_number_not_text(tmp_path: Path, line: str,
                                                      reason: str) -> None:
    """A bad line raises ConfigError naming its number; the line's text (a secret) never shows."""
    path = write_env(tmp_path, f"# comment\nGOOD=1\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_env_file(path)
    err = info.value
    assert err.key == "line 3"
    assert err.reason == reason
    assert err.exit_code == 2
    assert str(path) in str(err)
    for text in (str(err), repr(err), str(err.to_dict()), err.hint or "", err.tail):
        assert SECRET not in text


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing env file is reported as server.env_file: file not found."""
    with pytest.raises(ConfigError, match=r"server\.env_file: file not found"):
        read_env_file(tmp_path / "nope.env")


def test_redact_secrets_hides_secret_keys_and_keeps_the_rest() -> None:
    """Values of secret-looking keys are replaced; the event, env_keys and others are kept."""
    event = {
        "event": "server.started", "password": "p", "DB_PASSWORD": "p2", "token": "t",
        "api_token": "t2", "secret_key": "s", "Authorization": "Bearer x", "cookie": "c",
        "env_keys": ["DATABASE_URL", "SECRET_KEY"], "release": "r1", "pid": 42,
    }
    out = redact_secrets(None, "info", dict(event))
    for key in ("password", "DB_PASSWORD", "token", "api_token", "secret_key",
                "Authorization", "cookie"):
        assert out[key] == REDACTED, key
    assert out["event"] == "server.started"
    assert out["env_keys"] == ["DATABASE_URL", "SECRET_KEY"]
    assert (out["release"], out["pid"]) == ("r1", 42)
