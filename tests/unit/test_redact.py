"""Credentials out of URLs: redact_url(), and the log processor and history that use it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from relman import logs
from relman.logs import redact_secrets
from relman.redact import redact_bytes, redact_url
from relman.releases import history


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("https://user:tok@host/x.git", "https://***@host/x.git", id="user-password"),
        pytest.param("https://tok@host", "https://***@host", id="token-only"),
        pytest.param("http://u:t@[::1]:8080/x", "http://***@[::1]:8080/x", id="ipv6-port"),
        pytest.param("git+https://u:t@h/x", "git+https://***@h/x", id="compound-scheme"),
        pytest.param("ssh://u:pw@host/x", "ssh://***@host/x", id="ssh-password"),
        pytest.param("https://u:p@ss@host/x", "https://***@host/x", id="unencoded-at"),
        pytest.param("fatal: unable to access 'https://u:t@h:1/x/': refused",
                     "fatal: unable to access 'https://***@h:1/x/': refused", id="in-a-message"),
        pytest.param("$ git clone -- https://a:b@h/r https://c@h/s /srv/x",
                     "$ git clone -- https://***@h/r https://***@h/s /srv/x", id="two-urls"),
        pytest.param("ssh://git@host/x.git", "ssh://git@host/x.git", id="ssh-login-kept"),
        pytest.param("git@github.com:acme/shop.git", "git@github.com:acme/shop.git",
                     id="scp-like-kept"),
        pytest.param("https://host/x?email=a@b.c", "https://host/x?email=a@b.c",
                     id="at-after-the-host"),
        pytest.param("/srv/git/shop.git", "/srv/git/shop.git", id="path"),
        pytest.param("deploy by alice@example.com", "deploy by alice@example.com", id="e-mail"),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    """The user and password of a URL become ***; ssh logins and other text are kept."""
    assert redact_url(text) == expected


def test_redact_bytes_keeps_bytes_that_are_not_utf8() -> None:
    """Raw output is redacted without mangling bytes that do not decode."""
    assert redact_bytes(b"\xff https://u:t@h/x \xfe\n") == b"\xff https://***@h/x \xfe\n"


def test_log_processor_redacts_urls_in_any_text_value() -> None:
    """The structlog belt hides credentials in every string value, not only secret keys."""
    out = redact_secrets(None, "info", {"event": "job.failed", "release": "r1",
                                        "error": "fetching https://ci:tok@h/x failed"})
    assert out["error"] == "fetching https://***@h/x failed"


def test_logged_traceback_is_redacted() -> None:
    """An exception's message in a logged traceback is redacted too."""
    def fail() -> None:
        raise RuntimeError("cannot reach https://ci:tok@h/x")

    stream = io.StringIO()
    logs.configure(stream=stream)
    try:
        try:
            fail()
        except RuntimeError:
            structlog.get_logger("t").exception("control.request_failed")
    finally:
        structlog.reset_defaults()
    assert "tok" not in stream.getvalue()
    assert "https://***@h/x" in stream.getvalue()


def test_history_entry_is_redacted(tmp_path: Path) -> None:
    """history.jsonl never records a URL's credentials, whoever forgot to redact them."""
    path = tmp_path / "history.jsonl"
    history.record(path, "deploy_failed", error="fetching https://ci:tok@h/x failed")
    (entry,) = (json.loads(line) for line in path.read_text().splitlines())
    assert entry["error"] == "fetching https://***@h/x failed"
