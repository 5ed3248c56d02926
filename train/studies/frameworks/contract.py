"""What the runner asks of every framework engine, and what it hands them.

The runner owns the data (numpy arrays, NCHW float32, normalised), the batch order, the clock and the
tracker; an engine owns a model and its steps. A step returns only when its work is done on the device
(Keras returns host values, the MXNet worker waits for its engine, the torch engine synchronises), so the
runner's wall clock between steps measures the same thing for every framework.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DATA_FORMATS = ("channels_first", "channels_last")


@dataclass(frozen=True)
class TaskOptions:
    framework: str
    task: str
    batch_size: int
    epochs: int
    steps: int | None  # synthetic data: steps per epoch, warm-up included; None: one pass over the data set
    lr: float
    momentum: float
    image_size: int
    num_classes: int
    data_format: str
    precision: str
    seed: int
    warmup_steps: int
    window_steps: int
    threads: int | None = None  # CPU threads of the framework; None: its own default
    data_dir: str = "data"
    tracking_uri: str | None = None
    experiment: str = "cnnbench-frameworks"
    run_name: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Arrays:
    """Images (N, 3, H, W) float32, normalised; labels (N,) int64. Synthetic tasks have no validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class ModelInfo:
    arch_resolved: str  # where the model comes from, e.g. "keras.applications.ResNet50"
    model_variant: str  # what that model is, in words (ResNet-50 v1 or v1.5, head, initialisation)
    graph_compile: str  # what the framework compiles the step into
    num_params: int  # trainable parameters (BN running statistics are buffers, as torch counts them)


class Unsupported(Exception):
    """The framework cannot run the asked combination here: recorded as a result, not a crash."""


class Engine(Protocol):
    """Constructed as ``Engine(threads)``; raises ``UsageError`` with the install command when the
    framework is missing."""

    framework_version: str
    device: str  # "cpu" | "cuda"
    threads: str  # the CPU threads it uses, in words

    def build(self, opts: TaskOptions, data: Arrays) -> ModelInfo:
        """Model, optimiser and the data in this framework's layout; may raise ``Unsupported``."""

    def train_step(self, indices: np.ndarray) -> None:
        """One SGD step on ``data.x_train[indices]``; adds its loss and correct count to the epoch's sums."""

    def end_train_epoch(self) -> tuple[float, float]:
        """(mean loss, top-1 accuracy) over the images of the steps since the last call."""

    def predict_val(self, indices: np.ndarray) -> np.ndarray:
        """Logits (len(indices), classes) of ``data.x_val[indices]``, in evaluation mode."""

    def infer_step(self, indices: np.ndarray) -> None:
        """A forward pass of the feature extractor on ``data.x_train[indices]``."""

    def close(self) -> None: ...
