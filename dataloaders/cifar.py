"""CIFAR-10/100 read from the python pickle batches (not torchvision's reader, which md5-checks every file).

Layout: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` or ``<data_dir>/cifar-100-python/{train,test}``;
``data_dir`` may also be that folder itself. The whole set is held in memory as one uint8 tensor.
"""
from __future__ import annotations

import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from dataloaders.contract import DataConfig, DatasetSpec, Loaders, digest
from dataloaders.normalization import MEAN_STD, to_normalized_float
from dataloaders.torch_loader import TensorImages, build_torch_loaders
from train.context import DistContext
from train.errors import UsageError

DOWNLOAD_TIMEOUT_S = 10  # per socket operation: an unreachable network fails in seconds instead of hanging


@dataclass(frozen=True)
class CifarFiles:
    folder: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str


FILES = {
    "cifar10": CifarFiles("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                          "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a"),
    "cifar100": CifarFiles("cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                           "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           "eb9058c3a382ffc7106e4002c42a8d85"),
}


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    spec, (train_images, train_labels), (val_images, val_labels) = read(cfg)
    augment = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    normalize = to_normalized_float(spec.mean, spec.std)
    train = TensorImages(train_images, train_labels, v2.Compose(augment + normalize))
    val = TensorImages(val_images, val_labels, v2.Compose(normalize))
    return build_torch_loaders(spec, train, val, cfg.workers, cfg, ctx)


def read(cfg: DataConfig) -> tuple[DatasetSpec, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The data set's spec and its training and validation images and labels, for every loading backend."""
    files = FILES[cfg.dataset]
    folder = find_folder(cfg, files)
    train, val = (read_split(folder, names, files) for names in (files.train, files.val))
    mean, std = MEAN_STD[cfg.dataset]
    spec = DatasetSpec(cfg.dataset, files.num_classes, 32, mean, std, len(train[1]), len(val[1]),
                       source=str(folder.resolve()), digest=digest(*train, *val))
    return spec, train, val


def find_folder(cfg: DataConfig, files: CifarFiles) -> Path:
    root = Path(cfg.data_dir)
    for folder in (root / files.folder, root):
        if (folder / files.train[0]).is_file():
            return folder
    if cfg.download:
        download(root, files)
        return root / files.folder
    raise UsageError(f"no {cfg.dataset} batches in {root} (looked for {root / files.folder / files.train[0]}); "
                     f"extract {files.url} into {root} or pass --download")


def download(root: Path, files: CifarFiles) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_and_extract_archive(files.url, root, md5=files.md5)
    except (OSError, RuntimeError) as e:  # URLError and timeouts are OSErrors; RuntimeError: checksum mismatch
        raise UsageError(f"could not download {files.url} into {root} ({_reason(e)}): the network is unreachable "
                         f"or the file is corrupt; put the extracted archive at {root / files.folder} "
                         f"and run without --download") from None
    finally:
        socket.setdefaulttimeout(previous)


def read_split(folder: Path, names: tuple[str, ...], files: CifarFiles) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch files of one split -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    batches = [read_batch(folder / name, files) for name in names]
    images = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


class BatchUnpickler(pickle.Unpickler):
    """Unpickles what CIFAR's batch files hold (dicts, lists, bytes, str, ints, numpy arrays) and nothing else.

    A pickle may name any importable function and call it while it loads: a data folder from elsewhere could
    run code. Builtin containers and scalars need no lookup; these are the only globals the real files (and
    numpy arrays pickled by Python 3) name.
    """

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_batch(path: Path, files: CifarFiles) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> data (N, 3072) uint8 and labels (N,) int64; anything else is a UsageError naming it."""
    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="bytes").load()  # the real files are Python 2 pickles, bytes keys
    except FileNotFoundError:
        raise _corrupt(path, files, "the file is missing") from None
    except Exception as e:  # garbage bytes can make pickle raise nearly any exception type
        raise _corrupt(path, files, _reason(e)) from None
    if not isinstance(batch, dict):
        raise _corrupt(path, files, f"holds a {type(batch).__name__}, not a dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or files.label_key not in batch:
        raise _corrupt(path, files, f"has keys {sorted(map(str, batch))}, expected 'data' and {files.label_key!r}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _corrupt(path, files, f"'data' is {data.dtype} of shape {data.shape}, expected uint8 (N, 3072)")
    try:
        labels = np.asarray(batch[files.label_key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise _corrupt(path, files, f"{files.label_key!r} are not integers ({_reason(e)})") from None
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= files.num_classes:
        raise _corrupt(path, files, f"{files.label_key!r} are not {len(data)} labels in [0, {files.num_classes})")
    return data, labels


def _corrupt(path: Path, files: CifarFiles, problem: str) -> UsageError:
    return UsageError(f"cannot use CIFAR batch {path}: {problem}; "
                      f"replace it with the file from {files.url}")


def _reason(e: Exception) -> str:
    """The exception on one line, for the one-line message the launcher prints."""
    return " ".join(f"{type(e).__name__}: {e}".split())
