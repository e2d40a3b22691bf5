"""Learning-rate policies: pure, frozen values mapping the optimizer step t to a learning rate."""

from .compose import Composite, Scaled, Segment, Stretched, Warmup
from .lr import (
    Cos,
    Exp,
    Fix,
    Inv,
    NStep,
    Policy,
    Poly,
    Sin,
    Sin2,
    SinExp,
    Step,
    Triangle,
    Triangle2,
    TriangleExp,
    curve,
)
from .modern import CosineWarmup, LinearDecay, OneCycle, WarmupStableDecay
from .momentum import CyclicMomentum, Demon, MomentumPolicy, OneCycleMomentum
from .spec import from_spec, to_spec

__all__ = [
    "Composite",
    "Cos",
    "CosineWarmup",
    "CyclicMomentum",
    "OneCycleMomentum",
    "Demon",
    "Exp",
    "Fix",
    "Inv",
    "LinearDecay",
    "MomentumPolicy",
    "NStep",
    "OneCycle",
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
    "WarmupStableDecay",
    "curve",
    "from_spec",
    "to_spec",
]
