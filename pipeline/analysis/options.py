"""The report's settings (``conf/report.yaml``), checked at the edge before any run is read.

Every error is a :class:`ReportConfigError` whose message starts with the key, then the accepted values, then the
bad value, e.g. ``target must be an accuracy in (0, 1], got 1.5``. :func:`check_places` then checks, before any run is
read, that the folders the report writes can be written and that the store can be read (and written, when the report
is logged to it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.arguments import check_int, check_number

RANK_BY = ("steps", "seconds", "final")
SCOPES = ("latest_sweep", "all")
_RUN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class ReportConfigError(ValueError):
    """A report setting that cannot work; the message names the key."""


@dataclass(frozen=True)
class ReportOptions:
    uri: str | None                      # MLflow store; None: $MLFLOW_TRACKING_URI or the local SQLite store
    experiments: tuple[str, ...] | None  # experiment names; None: every experiment
    parent_run_id: str | None            # a sweep's parent run: report on its children only
    target: float                        # validation objective to reach, in its units (accuracy: fraction in (0, 1])
    budget_steps: int | None             # optimizer steps; None: each run's own budget
    budget_s: float | None               # training seconds; None: no time limit
    baseline: str                        # policy name speed-ups are measured against
    rank_by: str                         # steps | seconds | final
    max_fluctuation: float               # late std of the objective (its units) above which a policy is unstable
    alpha: float                         # significance level of the margin test
    confidence: float                    # level of the seed t-intervals
    top_n: int                           # candidates per group whose curves are plotted (plus the baseline)
    plot_seeds: int                      # seeds per plotted candidate whose accuracy curves are drawn
    max_points: int                      # points per curve read from MLflow
    tail_factor: float                   # composite tail LR = this x the recommended LR at the switch step
    out_dir: str                         # folder of the report files
    cache_dir: str | None                # folder of the history cache; None: memory only
    log_to_mlflow: bool                  # log the report as a kind=report run
    timings: bool = False                # print each stage's wall and CPU seconds to stderr
    scope: str = "latest_sweep"          # latest_sweep | all: the runs read without parent_run_id
    verify: bool = False                 # train the proposed composite (same seeds, budget) and report it


def _checked(rule, key: str, *args, **kwargs):
    """One of the shared value checks (:mod:`pipeline.arguments`) on a report setting, as a ReportConfigError."""
    try:
        return rule(key, *args, **kwargs)
    except ValueError as exc:
        raise ReportConfigError(str(exc)) from None


def _number(cfg: Mapping, key: str, low: float, high: float, low_open: bool, unit: str, allow_none=False):
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    return _checked(check_number, key, value, low, high, low_open=low_open, what=unit)


def _finite(cfg: Mapping, key: str, unit: str) -> float:
    return _checked(check_number, key, cfg.get(key), -math.inf, math.inf, what=unit)


def _integer(cfg: Mapping, key: str, low: int, unit: str, allow_none=False) -> int | None:
    return _checked(check_int, key, cfg.get(key), low, optional=allow_none, context=f" ({unit})")


def _probability(cfg: Mapping, key: str) -> float:
    return _checked(check_number, key, cfg.get(key), 0, 1, low_open=True, high_open=True, what="a probability")


def _name(value, key: str, allow_none=False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ReportConfigError(f"{key} must be a non-empty name, got {value!r}")
    return value


def _check_keys(cfg: Mapping) -> None:
    """Refuse a setting ``conf/report.yaml`` does not have (``+targt=0.5`` would otherwise be ignored and the report
    run with the default target), naming the nearest one."""
    import difflib
    from pathlib import Path

    from omegaconf import OmegaConf

    settings = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "report.yaml")
    known = {str(k) for k in settings if k not in ("defaults", "hydra")}
    for key in cfg:
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ReportConfigError(f"{key} is not a report setting{hint} (settings: {', '.join(sorted(known))})")
    for key in cfg.get("tracking") or {}:
        if key != "uri":
            raise ReportConfigError(f"tracking.{key} is not a report setting (tracking has uri)")


def check_options(cfg: Mapping) -> ReportOptions:
    """Check a plain report config (``OmegaConf.to_container(cfg)``) and return it as options."""
    _check_keys(cfg)
    tracking = cfg.get("tracking") or {}
    uri = tracking.get("uri")
    if uri is not None and (not isinstance(uri, str) or not uri.strip()):
        raise ReportConfigError(f"tracking.uri must be a URI string or null, got {uri!r}")
    experiments = cfg.get("experiments")
    if isinstance(experiments, str):
        experiments = [experiments]
    if experiments is not None:
        if not isinstance(experiments, (list, tuple)) or not experiments:
            raise ReportConfigError(f"experiments must be a non-empty list of experiment names or null, "
                                    f"got {experiments!r}")
        experiments = tuple(_name(e, f"experiments[{i}]") for i, e in enumerate(experiments))
    parent = cfg.get("parent_run_id")
    if parent is not None and (not isinstance(parent, str) or not _RUN_ID.match(parent)):
        raise ReportConfigError(f"parent_run_id must be an MLflow run id (letters, digits) or null, got {parent!r}")
    rank_by = cfg.get("rank_by")
    if rank_by not in RANK_BY:
        raise ReportConfigError(f"rank_by must be one of {', '.join(RANK_BY)}; got {rank_by!r}")
    scope = cfg.get("scope", "latest_sweep")
    if scope not in SCOPES:
        raise ReportConfigError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    for key in ("log_to_mlflow", "timings", "verify"):
        if not isinstance(cfg.get(key, False), bool):
            raise ReportConfigError(f"{key} must be true or false, got {cfg.get(key)!r}")
    cache_dir = cfg.get("cache_dir")
    return ReportOptions(
        uri=uri,
        experiments=experiments,
        parent_run_id=parent,
        # In the objective's units; its range is checked once the runs say which objective it is.
        target=_finite(cfg, "target", "a finite number in the objective's units (accuracy: a fraction in (0, 1])"),
        budget_steps=_integer(cfg, "budget_steps", 1, "optimizer steps", allow_none=True),
        budget_s=_number(cfg, "budget_s", 0, math.inf, True, "training seconds", allow_none=True),
        baseline=_name(cfg.get("baseline"), "baseline"),
        rank_by=rank_by,
        max_fluctuation=float(_number(cfg, "max_fluctuation", 0, math.inf, False,
                                      "the late std of the objective, in its units")),
        alpha=_probability(cfg, "alpha"),
        confidence=_probability(cfg, "confidence"),
        top_n=_integer(cfg, "top_n", 1, "candidates per group"),
        plot_seeds=_integer(cfg, "plot_seeds", 1, "seeds per candidate"),
        max_points=_integer(cfg, "max_points", 2, "points per curve"),
        tail_factor=float(_number(cfg, "tail_factor", 0, 1, True, "a factor")),
        out_dir=_name(cfg.get("out_dir"), "out_dir"),
        cache_dir=_name(cache_dir, "cache_dir", allow_none=True),
        log_to_mlflow=cfg.get("log_to_mlflow"),
        timings=cfg.get("timings", False),
        scope=scope,
        verify=cfg.get("verify", False),
    )


def check_places(options: ReportOptions, uri: str) -> None:
    """``out_dir`` and ``cache_dir`` can be created and written (probed, nothing left behind), and the store at
    ``uri`` exists and answers: a ReportConfigError or TrackingError naming the key, within seconds."""
    from pathlib import Path

    from pipeline.arguments import writable_folder
    from pipeline.tracking.store import check_reachable

    for key in ("out_dir", "cache_dir"):
        folder = getattr(options, key)
        if folder is not None:
            try:
                writable_folder(key, Path(folder).resolve())
            except ValueError as exc:
                raise ReportConfigError(str(exc)) from None
    check_reachable(uri, write=options.log_to_mlflow, create=False)
