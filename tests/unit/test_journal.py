"""The transaction journal: one file per job in progress, read back after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relman.journal import ORDER, Journal, JournalEntry, Step, after

# STYLE.md practice 3: the deploy steps, in order, as the journal and --json spell them.
STYLE_STEPS = ["fetched", "built", "released", "started", "healthy", "previewed", "published",
               "switched", "verified", "handed_over", "drained", "stopped_old", "done"]


def test_step_values_are_style_words_in_order() -> None:
    """Deploy steps are the lowercase words of STYLE practice 3, begun first and failed last."""
    assert [str(s) for s in Step] == ["begun", *STYLE_STEPS, "failed"]
    assert all(s.value == s.value.lower() for s in Step)
    assert tuple(Step) == ORDER


@pytest.mark.parametrize(
    ("step", "other", "expected"),
    [
        pytest.param(Step.BUILT, Step.FETCHED, True, id="built-after-fetched"),
        pytest.param(Step.FETCHED, Step.BUILT, False, id="fetched-not-after-built"),
        pytest.param(Step.SWITCHED, Step.SWITCHED, False, id="not-after-itself"),
        pytest.param(Step.DONE, Step.BEGUN, True, id="done-after-begun"),
        pytest.param(Step.STOPPED_OLD, Step.DRAINED, True, id="stopped-old-after-drained"),
    ],
)
def test_after(step: Step, other: Step, expected: bool) -> None:
    """after() compares steps by their place in a deploy."""
    assert after(step, other) is expected


def test_begin_step_end_round_trip(tmp_path: Path) -> None:
    """Each step is on disk at once; a second Journal reads it back; end() removes the file."""
    path = tmp_path / "journal.json"
    journal = Journal(path)
    entry = journal.begin(JournalEntry(job="deploy", release="r1", ref="v1", who="alice",
                                       previous="a", previous_release="r0"))
    assert Journal(path).unfinished() == entry

    for step in (Step.FETCHED, Step.BUILT, Step.STARTED):
        changes = {"candidate": "b"} if step is Step.STARTED else {}
        journal.step(step, **changes)
        found = Journal(path).unfinished()
        assert found is not None
        assert found.step is step
        assert json.loads(path.read_text())["step"] == str(step)

    found = Journal(path).unfinished()
    assert found is not None
    assert found == journal.entry
    assert (found.job, found.release, found.candidate, found.previous) == (
        "deploy", "r1", "b", "a")
    assert found.updated >= found.started

    journal.end()
    assert not path.exists()
    assert journal.entry is None
    assert Journal(path).unfinished() is None


def test_no_journal_means_nothing_unfinished(tmp_path: Path) -> None:
    """Without a journal file there is no unfinished job."""
    assert Journal(tmp_path / "journal.json").unfinished() is None


def test_step_outside_a_job_is_a_bug(tmp_path: Path) -> None:
    """Recording a step before begin() raises instead of writing a half entry."""
    journal = Journal(tmp_path / "journal.json")
    with pytest.raises(RuntimeError, match="outside a job"):
        journal.step(Step.BUILT)
    assert not (tmp_path / "journal.json").exists()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{truncated", id="bad-json"),
        pytest.param("", id="empty"),
        pytest.param('{"release": "r1"}', id="no-job"),
        pytest.param('{"job": "deploy", "step": "teleported"}', id="unknown-step"),
    ],
)
def test_corrupt_journal_reads_as_unknown_job(tmp_path: Path, text: str) -> None:
    """A journal that cannot be parsed reads back as a job named "unknown", not a crash."""
    path = tmp_path / "journal.json"
    path.write_text(text)
    found = Journal(path).unfinished()
    assert found is not None
    assert (found.job, found.step) == ("unknown", Step.BEGUN)


@pytest.mark.parametrize("text", ["[]", "null"], ids=["list", "null"])
def test_journal_holding_non_object_json_reads_as_unknown_job(tmp_path: Path,
                                                              text: str) -> None:
    """A journal holding JSON that is not an object reads back as a job named "unknown"."""
    path = tmp_path / "journal.json"
    path.write_text(text)
    found = Journal(path).unfinished()
    assert found is not None
    assert found.job == "unknown"


def test_a_job_whose_first_write_fails_is_not_in_progress(tmp_path: Path) -> None:
    """begin() that cannot write leaves no job in progress (no phantom job in status), and a
    step that cannot be written is not taken as done."""
    path = tmp_path / "journal.json"
    path.mkdir()  # the write fails for real: os.replace() onto a directory
    journal = Journal(path)
    with pytest.raises(IsADirectoryError):
        journal.begin(JournalEntry(job="deploy", ref="v1"))
    assert journal.entry is None
    path.rmdir()
    entry = journal.begin(JournalEntry(job="deploy", ref="v1"))
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        journal.step(Step.FETCHED, release="r1")
    assert journal.entry == entry
