"""A policy as a JSON-able tree and back: how a run records the exact policy it trained under (``policy_config``)
and how the report re-creates it to evaluate it.

A spec has the shape of a ``conf/policy`` node, ``{"_target_": "pipeline.policies.Sin2", "k0": 0.01, "k1": 0.06,
"l": 2000}``; a wrapper (Warmup, Scaled, Stretched) holds its inner policy's spec under ``policy``, and a Composite
lists ``segments: [{"policy": <spec>, "until_steps": n}, ..., {"policy": <spec>}]`` with its ``clock``.

:func:`from_spec` is the only way data read back from a store becomes a policy. It builds only the classes that
``pipeline.policies`` exports, through their constructors (which check every value), from numbers, lists of
numbers and the string fields (``clock``, ``first_moment``); it never imports anything a spec names.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import typing
from collections.abc import Mapping

TARGET = "_target_"
_PREFIX = "pipeline.policies."
_SEGMENT_KEYS = ("policy", "until_steps")
# Policies inside policies: the job's wrappers over a composite of composites stay far below this; a deeper spec is
# refused before it can exhaust Python's stack.
MAX_DEPTH = 32


@functools.cache
def _classes() -> dict[str, type]:
    """``_target_`` -> class: the policy dataclasses ``pipeline.policies`` exports (a Segment is no policy: it
    appears inside a Composite's ``segments`` as ``{policy, until_steps}``)."""
    from pipeline import policies

    found = {_PREFIX + name: getattr(policies, name) for name in policies.__all__}
    return {target: cls for target, cls in found.items()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls is not policies.Segment}


@functools.cache
def _string_fields(cls: type) -> frozenset[str]:
    """Fields declared ``str`` (Composite.clock, Demon.first_moment): the only ones a spec may give as text."""
    return frozenset(name for name, kind in typing.get_type_hints(cls).items() if kind is str)


# -- policy -> spec ------------------------------------------------------------------------------------------------


def to_spec(policy: object) -> dict:
    """The spec of ``policy`` (one of ``pipeline.policies``' classes, wrappers and segments included); fields that
    are None (an unbound Demon's ``total_steps``, the last segment's ``until_steps``) are left out: their default."""
    target = _PREFIX + type(policy).__name__
    if _classes().get(target) is not type(policy):
        raise ValueError(f"policy must be one of {sorted(_classes())}, got {type(policy).__name__} {policy!r}")
    spec: dict = {TARGET: target}
    for field in dataclasses.fields(policy):
        value = getattr(policy, field.name)
        if value is None:
            continue
        if field.name == "policy":
            spec["policy"] = to_spec(value)
        elif field.name == "segments":
            spec["segments"] = [_segment_spec(s) for s in value]
        else:
            spec[field.name] = _plain(field.name, value)
    return spec


def _segment_spec(segment) -> dict:
    out = {"policy": to_spec(segment.policy)}
    if segment.until_steps is not None:
        out["until_steps"] = segment.until_steps
    return out


def _plain(name: str, value: object):
    if isinstance(value, (tuple, list)):
        return [_plain(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # numpy integers: JSON knows only Python's
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"{name} must be a number, a list of numbers or a string to be recorded, got {value!r}")


# -- spec -> policy ------------------------------------------------------------------------------------------------


def from_spec(spec: object) -> object:
    """The policy a spec describes, built by its class's constructor.

    Raises ValueError naming the key (``segments[0].policy._target_``, ``policy.k0``) for a ``_target_`` that is
    not one of ``pipeline.policies``' classes, an unknown or missing key, a value that is not a number, a list of
    numbers or (for a ``str`` field) a string, a spec nested deeper than MAX_DEPTH policies, and any value the
    constructor rejects.
    """
    return _build(spec, "", 0)


def _build(spec: object, where: str, depth: int) -> object:
    """:func:`from_spec` of a spec nested ``depth`` policies deep, whose keys are named after ``where``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where.rstrip('.')} nests policies deeper than {MAX_DEPTH}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where.rstrip('.') or 'spec'} must be a policy spec (a mapping with {TARGET}), "
                         f"got {type(spec).__name__} {spec!r:.100}")
    classes = _classes()
    target = spec.get(TARGET)
    if not isinstance(target, str) or target not in classes:
        raise ValueError(f"{where}{TARGET} must be one of {sorted(classes)}, got {target!r:.100}")
    cls = classes[target]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in spec if k != TARGET and k not in fields)
    if unknown:
        raise ValueError(f"{where}{unknown[0]} is not a field of {target} (fields: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if name not in spec and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}{missing[0]} is required by {target}")
    values = {name: _value(cls, name, value, f"{where}{name}", depth) for name, value in spec.items()
              if name != TARGET}
    try:
        return cls(**values)
    except ValueError as error:
        # The constructors' messages start with the field name ("k0 must be > 0 ..."): put the path in front.
        raise ValueError(f"{where}{error}") from error


def _value(cls: type, name: str, value: object, key: str, depth: int):
    if name == "policy":
        return _build(value, f"{key}.", depth + 1)
    if name == "segments":
        return _segments(value, key, depth)
    if name in _string_fields(cls):
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    return _number_or_list(value, key)


def _number_or_list(value: object, key: str):
    if isinstance(value, list):
        return [_number(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return _number(value, key)


def _number(value: object, key: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {type(value).__name__} {value!r}")
    return value


def _segments(value: object, key: str, depth: int) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be a non-empty list of {{policy, until_steps}}, got {value!r}")
    out = []
    for i, item in enumerate(value):
        here = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{here} must be a segment {{policy, until_steps}}, got {type(item).__name__} {item!r}")
        unknown = sorted(str(k) for k in item if k not in _SEGMENT_KEYS)
        if unknown:
            raise ValueError(f"{here}.{unknown[0]} is not a key of a segment (keys: policy, until_steps)")
        if "policy" not in item:
            raise ValueError(f"{here}.policy is required")
        segment = {"policy": _build(item["policy"], f"{here}.policy.", depth + 1)}
        if "until_steps" in item:
            segment["until_steps"] = _number(item["until_steps"], f"{here}.until_steps")
        out.append(segment)
    return out
