"""What the CLI's numbers may be: a count, a duration."""

from __future__ import annotations

import math
from typing import Final

import click

#: a count of things to show (history -n, logs -n): 0 or more
COUNT: Final = click.IntRange(min=0)


def positive_number(_ctx: click.Context, _param: click.Parameter, value: float | None
                    ) -> float | None:
    """A finite number above 0 (an option callback after type=float): float() also takes
    nan, inf and -1, which would make `history --since` mean everything or nothing without
    a word (issue 11)."""
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise click.BadParameter(f"{value:g} is not a finite number above 0")
    return value


def number_at_least_0(_ctx: click.Context, _param: click.Parameter, value: float | None
                      ) -> float | None:
    """A finite number, 0 or more (switch --keep-warm)."""
    if value is not None and (not math.isfinite(value) or value < 0):
        raise click.BadParameter(f"{value:g} is not a finite number of at least 0")
    return value
