"""The TensorFlow engine: Keras 3 on TensorFlow, ``keras.applications.ResNet50`` and the VGG-style CNN, stepped
with ``train_on_batch`` / ``predict_on_batch`` (each returns host values, so each step has ended when it returns)."""
from __future__ import annotations

import contextlib
import os
import re

import numpy as np

from train.errors import UsageError
from train.studies.frameworks.contract import Arrays, ModelInfo, TaskOptions, Unsupported
from train.studies.frameworks.tasks import FEATURES, TASKS, VGG_CNN, VGG_CNN_VARIANT, VggCnnSpec

INSTALL = "pip install -e '.[tensorflow]' (into .venv)"
POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}
NHWC_ONLY = re.compile(r"[^.{}\]\n]*\bNHWC\b[^.\n]*\.")  # the sentence of TensorFlow's error that says so
RESNET50_V1 = ("ResNet-50 v1 (stride 2 in the first 1x1 conv of each downsampling bottleneck; convs with bias), "
               "random init")


class KerasEngine:
    def __init__(self, threads: int | None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
        try:
            import keras
            import tensorflow as tf  # first: keras without tensorflow fails halfway through its own import
        except ImportError as err:
            raise UsageError(f"tensorflow is not installed ({err}): {INSTALL}") from None
        self.keras, self.tf = keras, tf
        self.framework_version = f"tensorflow {tf.__version__}, keras {keras.__version__}"
        self.threads = "tensorflow default" if threads is None else self._set_threads(threads)
        self.device = "cuda" if tf.config.list_logical_devices("GPU") else "cpu"
        self.logs = {}

    def _set_threads(self, threads: int) -> str:
        try:
            self.tf.config.threading.set_intra_op_parallelism_threads(threads)
            self.tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow fixes its pools when it starts: a second run in one process meets this
            raise UsageError(f"--threads {threads}: TensorFlow already runs with "
                             f"{self.tf.config.threading.get_intra_op_parallelism_threads()} in this process") from None
        return f"intra-op {threads}, inter-op 1"

    def build(self, opts: TaskOptions, data: Arrays) -> ModelInfo:
        keras = self.keras
        if opts.data_format == "channels_first":
            self._probe_nchw()  # seconds, where finding out from the model's first step costs a minute of tracing
        keras.utils.set_random_seed(opts.seed)
        self.x_train, self.x_val = (_layout(x, opts.data_format) for x in (data.x_train, data.x_val))
        self.y_train = data.y_train
        with self._global_settings(opts):  # read by layers as they are built
            self.model, resolved, variant = self._model(opts, self.x_train.shape[1:])
        self.model.compile(optimizer=keras.optimizers.SGD(opts.lr, momentum=opts.momentum),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        params = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        return ModelInfo(resolved, variant, f"keras jit_compile={self.model.jit_compile}", params)

    def _model(self, opts: TaskOptions, shape: tuple[int, ...]):
        """(model, where it comes from, what it is)."""
        keras, task = self.keras, TASKS[opts.task]
        if task.arch == "vgg-cnn":
            return _vgg_cnn(keras, VGG_CNN, shape, task.num_classes), "cnnbench vgg_cnn (keras.Sequential)", \
                VGG_CNN_VARIANT
        if task.training:
            return (keras.applications.ResNet50(weights=None, input_shape=shape, classes=opts.num_classes,
                                                classifier_activation=None),
                    "keras.applications.ResNet50", RESNET50_V1)
        return (keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=shape),
                "keras.applications.ResNet50 (include_top=False, pooling=avg)", f"{RESNET50_V1}; {FEATURES}")

    @contextlib.contextmanager
    def _global_settings(self, opts: TaskOptions):
        keras = self.keras
        saved = keras.backend.image_data_format(), keras.mixed_precision.global_policy().name
        keras.backend.set_image_data_format(opts.data_format)
        keras.mixed_precision.set_global_policy(POLICIES[opts.precision])
        try:
            yield
        finally:
            keras.backend.set_image_data_format(saved[0])
            keras.mixed_precision.set_global_policy(saved[1])

    def train_step(self, indices: np.ndarray) -> None:
        with self._unsupported_layouts():
            self.logs = self.model.train_on_batch(self.x_train[indices], self.y_train[indices], return_dict=True)

    def end_train_epoch(self) -> tuple[float, float]:
        """Keras' metrics are running means over the images since the last reset."""
        result = float(self.logs["loss"]), float(self.logs["accuracy"])
        self.model.reset_metrics()
        return result

    def predict_val(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(self.x_val[indices]), dtype=np.float32)

    def infer_step(self, indices: np.ndarray) -> None:
        with self._unsupported_layouts():
            self.model.predict_on_batch(self.x_train[indices])

    def _probe_nchw(self) -> None:
        tf = self.tf
        with self._unsupported_layouts():
            tf.nn.conv2d(tf.zeros((1, 1, 4, 4)), tf.zeros((3, 3, 1, 1)), strides=1, padding="SAME", data_format="NCHW")

    @contextlib.contextmanager
    def _unsupported_layouts(self):
        """TensorFlow's CPU convolution kernels take NHWC only: NCHW fails, in the forward or the backward pass."""
        try:
            yield
        except self.tf.errors.OpError as err:
            said = NHWC_ONLY.search(str(err))
            if said is None:
                raise
            raise Unsupported(f"TensorFlow: {said.group(0).strip()}") from None

    def close(self) -> None:
        self.keras.backend.clear_session()


def _layout(x: np.ndarray | None, data_format: str) -> np.ndarray | None:
    if x is None or data_format == "channels_first":
        return x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _vgg_cnn(keras, spec: VggCnnSpec, shape: tuple[int, ...], num_classes: int):
    layers = keras.layers
    stack = [keras.Input(shape)]
    for widths in spec.blocks:
        stack += [layers.Conv2D(width, 3, padding="same", activation="relu") for width in widths]
        stack += [layers.MaxPooling2D(2), layers.Dropout(spec.block_dropout)]
    stack += [layers.Flatten(), layers.Dense(spec.dense, activation="relu"), layers.Dropout(spec.dense_dropout),
              layers.Dense(num_classes, dtype="float32")]  # float32 logits under a mixed policy
    return keras.Sequential(stack)
