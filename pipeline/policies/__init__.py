"""Learning-rate policies: pure, frozen values mapping the optimizer step t to a learning rate."""

from .compose import Composite, Scaled, Segment, Stretched, Warmup
from .lr import (
    Cos,
    Exp,
    Fix,
    Inv,
    NStep,
    Poly,
    Policy,
    Sin,
    Sin2,
    SinExp,
    Step,
    Triangle,
    Triangle2,
    TriangleExp,
    curve,
)
from .momentum import CyclicMomentum, Demon, MomentumPolicy
from .spec import from_spec, to_spec

__all__ = [
    "Composite",
    "Cos",
    "CyclicMomentum",
    "Demon",
    "Exp",
    "Fix",
    "Inv",
    "MomentumPolicy",
    "NStep",
    "Poly",
    "Policy",
    "Scaled",
    "Segment",
    "Stretched",
    "Sin",
    "Sin2",
    "SinExp",
    "Step",
    "Triangle",
    "Triangle2",
    "TriangleExp",
    "Warmup",
    "curve",
    "from_spec",
    "to_spec",
]
