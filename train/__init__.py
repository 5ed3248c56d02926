"""cnnbench: one training engine for image classifiers, and the benchmark studies built on it.

The layers, from the bottom up (``docs/architecture.md`` draws them; ``tests/test_layering.py`` holds them):

- ``train.errors``, ``train.context``: what every layer shares (the usage-error types; where a process sits in
  its job).
- ``train.models`` and the top-level ``dataloaders`` package: the model registry and the data sets.
- ``train.engine``: config, the training loop, the distribution seam, measurement, checkpoints, MLflow tracking.
- ``train.studies``: suites, reports, complexity analysis, pretrained evaluation, the framework comparison.
  They call the engine; the engine never imports them.
- entry points: ``launchers/*.py`` (one training job each) and ``train.cli`` (the ``cnnbench`` command).
"""
