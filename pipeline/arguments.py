"""The one set of value checks: config keys, report options, data sets, models, LCA and AutoAssist check their
arguments here.

A bad value raises ``ValueError`` whose message names the argument, what is accepted and the value; the config
stage (``pipeline/config/checks.py``) prefixes it with the config group, so the user sees the key.
"""

from __future__ import annotations

import math


def check_int(name: str, value: object, low: int, high: int | None = None, *, optional: bool = False,
              context: str = "", allowed: tuple[int, ...] = ()) -> int | None:
    """``value`` if it is an integer in ``[low, high]`` or one of ``allowed`` (or None when ``optional``); else
    ValueError."""
    if optional and value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and (
        value in allowed or (value >= low and (high is None or value <= high)))
    if not ok:
        accepted = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        extra = f" (or {', '.join(map(str, allowed))})" if allowed else ""
        raise ValueError(f"{name} must be {accepted}{extra}{' or None' if optional else ''}{context}, got {value!r}")
    return value


def check_number(name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False, what: str = "a number") -> float:
    """``value`` as a float if it is a finite number within the bounds (open or closed); else ValueError saying
    ``what`` it is (``an accuracy``, ``a probability``) and the accepted range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {what} in {bounds}, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` as a string if it is one of ``choices``; else ValueError listing them."""
    if str(value) not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def writable_folder(name: str, folder) -> None:
    """The folder, or the nearest folder above it that exists, takes a new entry (probed with a temporary folder that
    is removed at once: a rejected command leaves nothing behind; a real write, since root passes ``os.access``
    where the kernel still refuses, as in /proc); else ValueError naming ``name``."""
    import tempfile
    from pathlib import Path

    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        Path(tempfile.mkdtemp(dir=existing, prefix=".probe-")).rmdir()
    except OSError as exc:
        raise ValueError(f"{name}: cannot create or write the folder {folder} ({exc.strerror} in {existing}); "
                         "choose a writable folder") from None
