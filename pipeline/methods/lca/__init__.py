"""Loss Change Allocation (Lan, Liu, Zhou, Yosinski, NeurIPS 2019, arXiv 1909.01440), opted in with ``+analysis=lca``.

- :mod:`.loss`: ``L(θ)``, the fixed evaluation loss and its gradient at any parameters (pure).
- :mod:`.quadrature`: the LCA of one optimizer step by adaptive composite Simpson, and its per-layer sums (pure).
- :mod:`.artifacts`: the per-step CSV and the layers × steps heatmap a run leaves behind.
- :mod:`.callback`: :class:`~.callback.LCACallback`, the thin Lightning callback (``conf/analysis/lca.yaml``).
- :mod:`.summary`: the report's table of which layers helped or hurt under each policy.
"""
