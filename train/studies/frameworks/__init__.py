"""Framework comparison: the same three tasks on PyTorch, TensorFlow/Keras and MXNet, logged with one schema.

``cnnbench framework --framework pytorch|tensorflow|mxnet --task vgg-cnn|resnet50-train|resnet50-infer``.
The runner (``runner.py``) owns data, timing and MLflow logging; an engine per framework (``contract.Engine``)
owns only its model and its steps. MXNet 1.9.1 needs numpy<1.24, so its engine runs in ``.venv-mxnet`` as a
subprocess (``mxnet_worker.py``) behind a proxy with the same interface (``mxnet_engine.py``).

This package and ``contract``/``tasks`` import neither torch nor TensorFlow: the MXNet worker imports them
from its own environment.
"""
