"""Experiments: a list of training arms, each trained from scratch to one triplet budget, then
evaluated, then tabulated (``python -m training experiment RECIPE``).

- :mod:`.recipe`: the experiment TOML (arms, budget, datasets) and its validation;
- :mod:`.runner`: trains, exports and evaluates each arm, skipping finished ones (resumable);
- :mod:`.tables`: the paper's Tables 1-3 as Markdown from the per-arm JSONs (with ``--check``);
- :mod:`.figures`: PNG figures from the same JSONs (matplotlib, the ``train`` extra);
- :mod:`.supervised_baseline`: the supervised from-scratch baseline, the light-supervision row
  of Table 3 (the ``scratch`` arm kind).
"""
