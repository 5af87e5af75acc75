"""`relman session`'s output read back for tests: its hello, then each line's answer."""

from __future__ import annotations

import json
from typing import Any


def session_answers(stdout: str) -> list[list[Any]]:
    """Each line's output events, its done line last; AssertionError unless the output
    starts with the hello and ends with a done line."""
    said = [json.loads(line) for line in stdout.splitlines()]
    assert said, stdout
    assert said[0].get("type") == "session", stdout
    answers: list[list[Any]] = [[]]
    for event in said[1:]:
        answers[-1].append(event)
        if isinstance(event, dict) and event.get("type") == "done":
            answers.append([])
    assert answers.pop() == [], stdout
    return answers
