"""How each policy family takes the two learning rates an LR range test gives, k0 < k1 (``policy.k_from=range_test``;
the rule that finds them: :mod:`pipeline.range_test.rule`).

LRBench's reading of the range test (Smith, arXiv 1506.01186, section 3.3): k1 is the highest rate that still trains
well, k0 one where the loss starts to fall. Each family uses them where its shape needs them:

======================================================  ===========================================================
family                                                  fields set
======================================================  ===========================================================
fix                                                     k0 := k0 (a constant rate that is safe all run long)
triangle, triangle2, triangle_exp, sin, sin2, sin_exp   k0 := k0, k1 := k1 (the cycle spans the whole range)
exp, inv, step, nstep                                   k0 := k1 (their k0 is where the decay starts)
cos, poly                                               k1 := k1 (the start); k0 (the end) keeps its configured
                                                        fraction of k1 (cos ends at k1/50, poly at 0)
wsd, linear_decay, cosine_warmup                        peak_lr := k1; end_lr keeps its configured fraction of
                                                        peak_lr (0 as shipped: decay to zero)
one_cycle                                               max_lr := k1 (its start and end are torch's fractions of it)
a composite                                             each segment by its own family
======================================================  ===========================================================

Warm-up (``+warmup``), ``schedule.k_scale`` and ``schedule.horizon_steps`` wrap the policy as before: k_scale still
multiplies the range test's values (LRBench's scale test around them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import compose, lr, modern

CYCLIC = (lr.Triangle, lr.Triangle2, lr.TriangleExp, lr.Sin, lr.Sin2, lr.SinExp)
DECAY_FROM_K0 = (lr.Exp, lr.Inv, lr.Step, lr.NStep)
DECAY_K1_TO_K0 = (lr.Cos, lr.Poly)
PEAK_TO_END = (modern.WarmupStableDecay, modern.LinearDecay, modern.CosineWarmup)
WRAPPERS = (compose.Warmup, compose.Scaled, compose.Stretched)
FAMILIES = ("fix, triangle, triangle2, triangle_exp, sin, sin2, sin_exp, exp, inv, step, nstep, cos, poly, wsd, "
            "linear_decay, cosine_warmup, one_cycle and composites of them")


def _fraction(node: Mapping, end: str, start: str) -> float:
    """The configured end LR as a fraction of the start LR (0 when the start is 0)."""
    start_lr = float(node.get(start) or 0.0)
    return float(node.get(end) or 0.0) / start_lr if start_lr > 0 else 0.0


def _values(cls: type, node: Mapping, k0: float, k1: float) -> dict[str, float]:
    """The fields of a ``cls`` node the range test sets, and their values."""
    if issubclass(cls, lr.Fix):
        return {"k0": k0}
    if issubclass(cls, CYCLIC):
        return {"k0": k0, "k1": k1}
    if issubclass(cls, DECAY_FROM_K0):
        return {"k0": k1}
    if issubclass(cls, DECAY_K1_TO_K0):
        return {"k1": k1, "k0": k1 * _fraction(node, "k0", "k1")}
    if issubclass(cls, PEAK_TO_END):
        return {"peak_lr": k1, "end_lr": k1 * _fraction(node, "end_lr", "peak_lr")}
    if issubclass(cls, modern.OneCycle):
        return {"max_lr": k1}
    raise ValueError(f"{cls.__name__} has no learning rates the range test knows how to set (it sets {FAMILIES})")


def _target(node: Mapping) -> type:
    target = node.get("_target_")
    if not isinstance(target, str):
        raise ValueError(f"a policy node needs a _target_ naming its class, got {dict(node)!r}")
    from hydra.utils import get_object

    try:
        cls = get_object(target)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"_target_ {target!r} cannot be imported: {exc}") from None
    if not isinstance(cls, type):
        raise ValueError(f"_target_ {target!r} is not a policy class (it sets {FAMILIES})")
    return cls


def _node_with_k(node: Mapping, k0: float, k1: float) -> dict:
    cls = _target(node)
    out = dict(node)
    if issubclass(cls, compose.Composite):
        out["segments"] = [{**segment, "policy": _node_with_k(segment["policy"], k0, k1)}
                           for segment in node.get("segments") or []]
    elif issubclass(cls, WRAPPERS):
        out["policy"] = _node_with_k(node["policy"], k0, k1)
    else:
        out.update(_values(cls, node, k0, k1))
    return out


def with_k(policy: Any, k0: float, k1: float) -> Any:
    """``policy`` (a config node with ``_target_``, or a built policy of :mod:`pipeline.policies`) with the range
    test's k0 < k1 in the fields its family uses (module docstring); the same kind of thing back. ValueError for a
    class the rule does not know (a policy of the user's own)."""
    if not 0 < k0 < k1:
        raise ValueError(f"the range test's learning rates must be 0 < k0 < k1, got k0={k0!r}, k1={k1!r}")
    if isinstance(policy, Mapping):
        return _node_with_k(policy, k0, k1)
    from .spec import from_spec, to_spec

    try:
        spec = to_spec(policy)
    except ValueError:
        raise ValueError(f"{type(policy).__name__} has no learning rates the range test knows how to set (it sets "
                         f"{FAMILIES})") from None
    return from_spec(_node_with_k(spec, k0, k1))
