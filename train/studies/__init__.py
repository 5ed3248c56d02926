"""Studies built on the engine: benchmark suites, reports, complexity analysis, pretrained evaluation, and the
framework comparison. Each calls the engine's public functions and reads MLflow runs; none is imported by it.

Importing this package imports nothing heavy: the MXNet worker (``frameworks/mxnet_worker.py``) runs under
another interpreter without torch.
"""
