"""The three comparison tasks, their defaults, and the VGG-style CNN every framework builds from one spec.

vgg-cnn follows the CIFAR-10 notebooks of the DeepLearningFrameworks study (ilkarman/DeepLearningFrameworks,
common/utils.py and *_CIFAR.ipynb): 10 epochs, batch 64, SGD lr 0.01 momentum 0.9, no augmentation, only
complete training batches, test accuracy over the test set. resnet50-train follows the keras-apache-mxnet
backend benchmark (ResNet-50 v1 on synthetic images, batch 32, channels_first vs channels_last);
resnet50-infer the study's feature-extraction inference (ResNet-50 without its classifier).
"""
from __future__ import annotations

from dataclasses import dataclass

OPTIMISER_FLAGS = ("lr", "momentum")
COMMON_FLAGS = ("batch_size", "data_format", "precision", "seed", "warmup_steps", "window_steps", "threads")


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    arch: str
    dataset: str  # "cifar10" (read from --data-dir) or "synthetic"
    training: bool
    batch_size: int
    epochs: int
    steps: int | None  # synthetic data: steps per epoch, warm-up included
    image_size: int
    num_classes: int
    flags: tuple[str, ...]  # the option names a user may set for this task

    @property
    def synthetic(self) -> bool:
        return self.dataset == "synthetic"


TASKS = {t.name: t for t in (
    Task("vgg-cnn", "VGG-style CNN trained on CIFAR-10 (DeepLearningFrameworks): test accuracy, seconds",
         "vgg-cnn", "cifar10", True, batch_size=64, epochs=10, steps=None, image_size=32, num_classes=10,
         flags=(*COMMON_FLAGS, *OPTIMISER_FLAGS, "epochs", "data_dir")),
    Task("resnet50-train", "ResNet-50 training images/s on synthetic data, by batch size and data format",
         "resnet50", "synthetic", True, batch_size=32, epochs=1, steps=50, image_size=224, num_classes=1000,
         flags=(*COMMON_FLAGS, *OPTIMISER_FLAGS, "steps", "image_size", "num_classes")),
    Task("resnet50-infer", "ResNet-50 feature extraction (no classifier) images/s on synthetic data",
         "resnet50", "synthetic", False, batch_size=64, epochs=1, steps=50, image_size=224, num_classes=1000,
         flags=(*COMMON_FLAGS, "steps", "image_size")),
)}

LR, MOMENTUM = 0.01, 0.9  # the study's common/params.py


@dataclass(frozen=True)
class VggCnnSpec:
    """conv-conv-pool-dropout per block (3x3 convs, 'same' padding, ReLU; 2x2 max-pool), then dense-dropout-dense.
    Weights Glorot-uniform, biases zero in every framework (Keras' default; set explicitly elsewhere)."""

    blocks: tuple[tuple[int, int], ...] = ((50, 50), (100, 100))
    block_dropout: float = 0.25
    dense: int = 512
    dense_dropout: float = 0.5


VGG_CNN = VggCnnSpec()
VGG_CNN_VARIANT = "VGG-style CNN of DeepLearningFrameworks"
FEATURES = "2048-d average-pooled features"  # what resnet50-infer's nets end in

# Each framework's own layout unless --data-format says otherwise (TensorFlow's CPU kernels are NHWC-only).
NATIVE_DATA_FORMAT = {"pytorch": "channels_first", "tensorflow": "channels_last", "mxnet": "channels_first"}
