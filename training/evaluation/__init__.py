"""Downstream evaluation of embeddings, as in Jansen et al. (ICASSP 2018), sections 4.3-4.4.

- :mod:`~training.evaluation.datasets`: labeled sets (FSDD, Debian effects, ESC-50, AudioSet
  segment lists, manifest CSVs) in one form.
- :mod:`~training.evaluation.features`: window embeddings (a model, or the log-mel baseline),
  cached per model and dataset.
- :mod:`~training.evaluation.metrics`: query-by-example mAP and classifier mAP / accuracy.
- :mod:`~training.evaluation.classifiers`: 1- and 2-hidden-layer MLPs, folds, light supervision.
- :mod:`~training.evaluation.report`: the Markdown table (paper Table 2 columns) from results.
- :mod:`~training.evaluation.cli`: ``python -m training evaluate`` / ``evaluate-report``.
"""
