"""Argument checks shared by the training components (data, models, LCA, AutoAssist).

A bad value raises ``ValueError`` whose message names the argument, what is accepted and the value; the config
stage (``pipeline/config/checks.py``) prefixes it with the config group, so the user sees the key.
"""

from __future__ import annotations

import math


def check_int(name: str, value: object, low: int, high: int | None = None, *, optional: bool = False,
              context: str = "") -> int | None:
    """``value`` if it is an integer in ``[low, high]`` (or None when ``optional``); else ValueError."""
    if optional and value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        accepted = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {accepted}{' or None' if optional else ''}{context}, got {value!r}")
    return value


def check_number(name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """``value`` as a float if it is a finite number within the bounds (open or closed); else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)
