"""AutoAssist (Zhang et al., NeurIPS 2019), opted in with ``+sampler=autoassist``: a cheap assistant model decides
which samples the main model (the "boss") trains on, skipping those it predicts to be uninformative (notes
seeds_methods.md section C).

Parts, each small and testable alone:

- :mod:`.assistant`: :func:`~.assistant.keep_probability`, the acceptance rule
  ``P(keep) = base_prob + (1 - base_prob) * p``; and :class:`~.assistant.Assistant`,
  ``p(informative | x, y) = sigmoid(W . pool(x) + U[y])``, logistic regression on the image average-pooled to
  ``pool_size x pool_size`` per channel, plus a per-class bias. A sample is *informative* when the boss's loss on it
  is above the running mean loss (the paper's ``--sec_method mean``): an exponential moving average over batches,
  with decay ``loss_ema``, of the loss sum and of the sample count. Trained online by SGD on the log loss, one step
  per boss batch.
- :mod:`.batches`: :class:`~.batches.KeptBatches`, the boss's training batches. It pulls raw batches from the data
  module's train loader (a new shuffled pass whenever one ends), scores them with the assistant, keeps each sample
  with probability ``keep_probability`` (a seeded generator, so a run is reproducible), and emits batches of exactly
  ``batch_size`` kept samples. An epoch is a fixed number of emitted batches, ``ceil((N // world_size) / batch_size)``
  for N training samples (:mod:`pipeline.training.budget`, the rule every part of a run uses): the boss's batch
  size, its steps per epoch and so the LR policy's clock are the same as without AutoAssist. This is the paper's
  convention: "an epoch" is N *trained-on* samples, and "fewer epochs" means fewer boss gradient computations.
- :mod:`.callback`: :class:`~.callback.AutoAssistCallback`, after each boss batch it trains the assistant on that
  batch and the boss's per-sample losses (``PolicyClassifier.last_sample_losses``: no extra forward pass), and logs,
  per optimizer step, ``autoassist/accept_rate`` (kept / scored raw samples since the previous step),
  ``train/samples`` (cumulative samples the boss trained on), ``autoassist/assistant_acc`` (the assistant's accuracy
  on the step's batches, measured before it learns from them; compare with ``1 - autoassist/informative_frac``, the
  accuracy of always answering "uninformative"), ``autoassist/informative_frac`` (share of the step's samples
  labelled informative), ``autoassist/seen`` (cumulative raw samples scored) and ``autoassist/threshold`` (the
  running mean loss). In the run's summary (params ``summary.autoassist_*``, the table): ``summary/autoassist_*``.
  Samples and samples-to-target of *every* run, with or without AutoAssist, are summarised by the metrics callback
  (``summary/samples``, ``summary/samples_to_acc_{T}``).
  :class:`~.callback.AutoAssist` holds the checked settings (the ``sampler`` config group); calling it with the data
  module and the run's recorder builds the callback.
- :mod:`.summary`: the report's table of samples, steps and seconds to a target with and without AutoAssist.

Cost: scoring is one average-pool and one ``[B, d] x [d]`` product per raw batch (d = 49 for 28x28 grey images), the
update the same plus an outer product, all vectorised on the CPU, so it runs synchronously in the training loop.
Measured (``summary/autoassist_s``, scoring + drawing + updating): about 2 s of a 60-90 s Fashion-MNIST/LeNet epoch
(~3%) on the shared 2-core CPU, where one LeNet step costs 40-60 ms. Not counted there: at an acceptance rate of ~0.48
the loader is read about twice as often (one indexing op, ~0.2 ms, per raw batch). On a GPU the update copies the
pooled batch (B x d) and the losses to the CPU, a sync the metrics callback already pays by reading the loss every
batch. Decisions are one batch stale: Lightning prefetches the next batch before the assistant has learnt from the
current one (the paper's are a few batches stale).

DDP: every rank iterates the same shuffled raw order and takes the samples at positions ``rank, rank + world_size,
...`` of each pass (disjoint shards, equal to one sample), draws its keep decisions from its own seeded stream, trains
its own assistant on its own losses, and emits the same fixed number of batches per epoch, so no rank waits in an
all-reduce. Per-rank counters (``seen``, accept rate, accuracy) are the logging process's own; ``train/samples``
counts all ranks.

What it does not do: no importance re-weighting (the gradient is biased towards informative samples; ``base_prob``
bounds the bias, as in the paper); the assistant sees the data module's batch as loaded (there is no augmentation in
this project; with augmentation it would score the augmented view the boss trains on). A resumed run restores the
assistant, the counters and the stream where the boss stopped (no sample skipped or repeated), but is not bit-exact:
the first regenerated batch is scored by an assistant one update fresher than in the uninterrupted run.
"""
