"""The types the training engine is written against: what it asks for and what it gets back."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str = "data"          # root folder (see each data set's module for its layout)
    download: bool = False
    loader: str = "torch"
    batch_size: int = 128           # per process
    val_batch_size: int | None = None   # None -> batch_size
    workers: int = 2                # DataLoader worker processes (0 = in the main process)
    loader_threads: int = 2         # DALI: CPU threads of each pipeline
    prefetch: int = 2               # DALI: batches a pipeline prepares ahead
    seed: int = 0
    channels_last: bool = False
    image_size: int | None = None   # synthetic only; None: the arch's own input size (the engine resolves it)
    num_classes: int | None = None  # synthetic only; None: the arch's own classes (10 CIFAR, 1000 ImageNet)
    synthetic_train_size: int | None = None  # synthetic images per epoch; None: see synthetic.default_steps
    synthetic_val_size: int | None = None    # None: two batches per process
    steps: int | None = None        # any data set: an epoch ends after this many training steps per process

    @property
    def eval_batch_size(self) -> int:
        return self.batch_size if self.val_batch_size is None else self.val_batch_size


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    image_size: int          # side of the square model input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_size: int          # images in the whole training set (all ranks)
    val_size: int            # images in the whole validation set (all ranks)
    source: str = ""         # where the images come from: a folder, a package, or "synthetic"
    digest: str = ""         # a short hash of images and labels (of the file list for folders): same data, same digest


def digest(*parts) -> str:
    """Eight hex digits of a SHA-256 over ``parts`` (arrays and tensors by their bytes, anything else by its text),
    the length of the digests MLflow shows for its datasets."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.numpy().tobytes() if isinstance(part, torch.Tensor) else
                 part.tobytes() if hasattr(part, "tobytes") else repr(part).encode())
    return h.hexdigest()[:8]


class DeviceLoader(Protocol):
    """One split's batches for this rank: normalised float32 images and int64 labels, already on the device."""

    num_samples: int  # images per epoch on this rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...  # batches per epoch on this rank

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class Loaders:
    spec: DatasetSpec
    train: DeviceLoader
    val: DeviceLoader
