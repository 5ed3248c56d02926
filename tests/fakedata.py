"""Small generated data sets in the exact on-disk formats the loaders read, for tests anywhere in the repo.

Images are learnable: each class has its own colour (plus noise), so a net can fit them in a few steps.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours, spread around the hue circle so neighbouring classes differ."""
    hue = np.arange(num_classes) / num_classes * 2 * np.pi
    rgb = [127 + 100 * np.cos(hue + shift) for shift in (0, 2 * np.pi / 3, 4 * np.pi / 3)]
    return np.stack(rgb, axis=1).round().astype(np.uint8)


def cifar_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels in shuffled order, every class present once n >= num_classes."""
    return rng.permutation(np.arange(n) % num_classes)


def cifar_pixels(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 in CIFAR's layout (all red, then green, then blue, each row-major 32x32)."""
    colour = class_colours(num_classes)[labels].astype(np.int16)[:, :, None, None]
    noise = rng.integers(-30, 31, size=(len(labels), 3, 32, 32), dtype=np.int16)
    return np.clip(colour + noise, 0, 255).astype(np.uint8).reshape(len(labels), -1)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the protocol of the real (Python 2) files


def write_cifar10(root, train_per_batch: int = 20, test: int = 17, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` with bytes keys like the real files."""
    root, rng = Path(root), np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    splits = [(f"data_batch_{i}", train_per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    for name, n, batch_label in splits + [("test_batch", test, "testing batch 1 of 1")]:
        labels = cifar_labels(n, 10, rng)
        _dump(folder / name, {b"batch_label": batch_label.encode(), b"labels": labels.tolist(),
                              b"data": cifar_pixels(labels, 10, rng),
                              b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(n)]})
    _dump(folder / "batches.meta", {b"num_cases_per_batch": train_per_batch, b"num_vis": 3072,
                                    b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    return root


def write_cifar100(root, train: int = 60, test: int = 23, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels and bytes keys like the real files."""
    root, rng = Path(root), np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        fine = cifar_labels(n, 100, rng)
        _dump(folder / name, {b"batch_label": f"{name}ing batch 1 of 1".encode(), b"fine_labels": fine.tolist(),
                              b"coarse_labels": (fine // 5).tolist(), b"data": cifar_pixels(fine, 100, rng),
                              b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(n)]})
    _dump(folder / "meta", {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]})
    return root


def write_imagefolder(root, classes=("cat", "dog", "fish"), train_per_class: int = 6, val_per_class: int = 3,
                      seed: int = 0, widths: tuple[int, int] = (40, 121), heights: tuple[int, int] = (30, 91)) -> Path:
    """``root/{train,val}/<class>/*.jpg``: real JPEGs of random sizes, ``widths`` and ``heights`` giving the ranges
    (end excluded; by default 40x30 to 120x90 pixels) and so the aspect ratios."""
    root, rng = Path(root), np.random.default_rng(seed)
    colours = class_colours(len(classes)).astype(np.int16)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                width, height = int(rng.integers(*widths)), int(rng.integers(*heights))
                noise = rng.integers(-30, 31, size=(height, width, 3), dtype=np.int16)
                pixels = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.jpg", quality=90)
    return root
