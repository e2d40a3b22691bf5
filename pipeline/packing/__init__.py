"""Packed policies (opt-in, ``trainer.pack``): K jobs of a sweep that differ only in their policies (and init seed)
trained together as one vectorised model, each copy recorded as its own MLflow run (GitHub issue #11, item 3).

How. Each job is checked and built as :func:`run_job <pipeline.training.job.run_job>` does it, so copy k starts from
the weights its own run would start from. The K networks are stacked (``nets.py``: every parameter and buffer one
``[K, ...]`` tensor) and trained under ``vmap`` on the *same* batch, copy k with its own loss and gradient. The update
(``sgd.py``) is ``torch.optim.SGD``'s formula with a per-copy learning rate and momentum, taken at each step from the
scheduler's rule (``pipeline.training.scheduler.rates_at``) in a plain PyTorch loop (``loop.py``, no Lightning
Trainer) that records and judges divergence as the metrics callback does. BatchNorm works: its running statistics
are stacked buffers, updated per copy.

Rules of a pack (``plan.py``; each broken rule is a ``ConfigError`` that names the key):

- The jobs' resolved configs are equal except in ``PACK_FREE_KEYS`` (policy, warm-up, schedule, momentum policy,
  seed, run name). Everything else (model, data, optimizer, budget, evaluation, tracking) is shared.
- **One data order.** The copies train on the same batches, so ``dataset.seed`` (the training order; it follows
  ``seed`` by default) must be equal. ``seed`` may differ: it seeds each copy's initial weights. To pack jobs of
  different seeds, fix the order: ``dataset.seed=0 seed=0,1,2``. A sweep over ``seed`` alone is packed per seed.
- SGD only (``optimizer=sgd``, ``momentum``, ``nesterov``); no dropout (its random masks could not match separate
  runs); one process on one device; no ``+analysis`` or ``+sampler``; no gradient accumulation; precision
  ``32-true`` or ``64-true``.

What a copy's run holds is what its own run would hold: ``lr``, ``momentum`` and ``train/loss`` at every optimizer
step, ``val/*`` every ``trainer.eval_every_steps`` steps and at the end, the summary (params ``summary.*``, the
test values among them, and the table ``summary.csv``), the config, LR-curve and ``lr_objective.png`` artifacts,
and the usual tags plus ``packed`` (K) and ``pack_id``. Differences: ``summary/train_s`` and
``seconds_to_*`` are the pack's wall-clock (K models trained in that time), and a pack keeps no checkpoints (a
killed pack ends KILLED and starts over when run again). A copy that diverges ends FAILED (diverged) and is frozen
(its updates are masked out) while the others go on.

Equivalence: in float64 (``trainer.precision=64-true``) a packed copy reproduces its separate run to rounding
(tests/test_packed.py); in float32 the summation order differs and the curves drift apart after tens of steps, as
separate float32 runs on different hardware do (notes perf.md). Speed: on CPU packing is slower than running the
jobs one after another (perf.md, ``benchmarks/packed.py``), so ``trainer.pack=auto`` packs only on CUDA.

Entry points (``run.py``): ``run_packed`` trains one pack; the pool launcher asks ``plan_sweep`` which jobs share a
pack and runs each group through ``train_group``.
"""
