"""Ref validation before git sees a ref, and the shape and order of release ids."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from relman.errors import BadRef
from relman.releases.ids import is_release_id, make_release_id, parse_commit_time
from relman.releases.refs import MAX_REF_LENGTH, validate_ref

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("v1.4.2", id="tag"),
        pytest.param("main", id="branch"),
        pytest.param("feature/x", id="nested-branch"),
        pytest.param(SHA, id="full-sha"),
        pytest.param("release-2026.1_rc", id="dashes-dots-underscores"),
        pytest.param("a" * MAX_REF_LENGTH, id="at-max-length"),
    ],
)
def test_valid_ref_is_returned_unchanged(ref: str) -> None:
    """A ref git accepts comes back as it was given."""
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("-x", "'-'", id="leading-dash"),
        pytest.param("--upload-pack=touch /tmp/pwned", "'-'", id="option-injection"),
        pytest.param("a..b", "'..'", id="range"),
        pytest.param("a b", "character", id="space"),
        pytest.param("a~1", "character", id="tilde"),
        pytest.param("a^", "character", id="caret"),
        pytest.param("a:b", "character", id="colon"),
        pytest.param("a?b", "character", id="question-mark"),
        pytest.param("a*", "character", id="star"),
        pytest.param("a[b", "character", id="bracket"),
        pytest.param("a\\b", "character", id="backslash"),
        pytest.param("x.lock", "not a valid git ref", id="lock-suffix"),
        pytest.param("x/", "not a valid git ref", id="trailing-slash"),
        pytest.param("x.", "not a valid git ref", id="trailing-dot"),
        pytest.param("a//b", "not a valid git ref", id="double-slash"),
        pytest.param("@{", "not a valid git ref", id="reflog-open"),
        pytest.param("main@{1}", "not a valid git ref", id="reflog-syntax"),
        pytest.param("a\x00b", "character", id="nul"),
        pytest.param("a\tb", "character", id="tab"),
        pytest.param("a\nb", "character", id="newline"),
        pytest.param("a\x1bb", "character", id="escape"),
        pytest.param("a\x7fb", "character", id="delete"),
    ],
)
def test_bad_ref_is_refused_with_ref_and_reason(ref: str, reason: str) -> None:
    """A ref git would misread raises BadRef (exit 2) whose message names the ref and why."""
    with pytest.raises(BadRef) as info:
        validate_ref(ref)
    err = info.value
    assert err.exit_code == 2
    assert err.code == "bad-ref"
    assert err.ref == ref
    assert reason in err.reason
    assert repr(ref) in str(err)
    assert err.reason in str(err)


def test_overlong_ref_is_refused_naming_its_start() -> None:
    """A ref over 255 characters is refused; the message shows its start, not all of it."""
    ref = "b" * (MAX_REF_LENGTH + 1)
    with pytest.raises(BadRef) as info:
        validate_ref(ref)
    err = info.value
    assert err.exit_code == 2
    assert str(MAX_REF_LENGTH) in err.reason
    assert "b" * 40 in str(err)
    assert ref not in str(err)


# 2026-11-23 03:15:00 UTC
STAMP = int(datetime(2026, 11, 23, 3, 15, tzinfo=UTC).timestamp())


def test_release_id_is_utc_stamp_and_short_sha() -> None:
    """A release id is the commit's UTC time as YYYYMMDDTHHMMSSZ, a dash and 7 hex digits."""
    assert make_release_id(STAMP, SHA) == "20261123T031500Z-1a2b3c4"


@pytest.fixture
def far_timezone() -> Iterator[None]:
    """Run with the local clock far from UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.usefixtures("far_timezone")
def test_release_id_ignores_local_timezone() -> None:
    """The id is the same on every host, whatever its local time zone."""
    assert make_release_id(STAMP, SHA) == "20261123T031500Z-1a2b3c4"


def test_release_ids_sort_in_commit_time_order() -> None:
    """Sorting ids as strings sorts them by commit time, across digit-width boundaries."""
    moments = [
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2026, 9, 30, 9, 9, 9, tzinfo=UTC),
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 10, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    shas = ["f" * 40, "0" * 40, "e" * 40, "1" * 40, "d" * 40, "2" * 40]  # never the tiebreak
    ids = [make_release_id(int(m.timestamp()), s) for m, s in zip(moments, shas, strict=True)]
    for shuffled in (ids[3:] + ids[:3], ids[1::2] + ids[::2], list(reversed(ids))):
        assert sorted(shuffled) == ids


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("20261123T031500Z-1a2b3c4", id="short-sha"),
        pytest.param(f"20261123T031500Z-{SHA}", id="full-sha"),
        pytest.param(make_release_id(0, SHA), id="epoch"),
    ],
)
def test_is_release_id_accepts_ids(text: str) -> None:
    """Ids of the documented shape are release ids."""
    assert is_release_id(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("../x", id="parent-path"),
        pytest.param("-rf", id="option"),
        pytest.param("20261123T031500Z", id="no-sha"),
        pytest.param("20261123T031500Z-1a2b3c", id="sha-too-short"),
        pytest.param("20261123T031500Z-1A2B3C4", id="uppercase-sha"),
        pytest.param("20261123T031500Z-xyzxyzx", id="not-hex"),
        pytest.param("20261123T031500-1a2b3c4", id="no-z"),
        pytest.param("2026-11-23T03:15:00Z-1a2b3c4", id="iso-punctuation"),
        pytest.param("20261123T031500Z-1a2b3c4/../../etc", id="path-suffix"),
        pytest.param("../20261123T031500Z-1a2b3c4", id="path-prefix"),
        pytest.param(" 20261123T031500Z-1a2b3c4", id="leading-space"),
        pytest.param("20261123T031500Z-1a2b3c4.json", id="file-name"),
        pytest.param(f"20261123T031500Z-{SHA}0", id="sha-too-long"),
    ],
)
def test_is_release_id_rejects_other_text(text: str) -> None:
    """Paths, options and near-misses are not release ids."""
    assert not is_release_id(text)


def test_is_release_id_rejects_trailing_newline() -> None:
    """An id followed by a newline is not a release id (it names a different file)."""
    assert not is_release_id("20261123T031500Z-1a2b3c4\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", 0, id="epoch"),
        pytest.param(str(STAMP), STAMP, id="today"),
        pytest.param("253402300799", 253402300799, id="last-second-of-9999"),
        pytest.param("253402300800", None, id="year-10000"),
        pytest.param("99999999999999999999", None, id="overflow"),
        pytest.param("9" * 5000, None, id="more-digits-than-int-reads"),
        pytest.param("", None, id="unreadable-date"),  # git's %ct for a negative date
        pytest.param("-5", None, id="negative"),
        pytest.param("\u0663", None, id="non-ascii-digit"),
    ],
)
def test_parse_commit_time_keeps_what_an_id_can_hold(text: str, expected: int | None) -> None:
    """A commit time from 1970 to the end of 9999 makes an id; anything else is None."""
    assert parse_commit_time(text) == expected
    if expected is not None:
        assert is_release_id(make_release_id(expected, SHA))
