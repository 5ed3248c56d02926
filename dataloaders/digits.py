"""scikit-learn's bundled handwritten digits: 1797 real 8x8 scans, so a real data set that needs no download.

Upsampled to 32x32 so the CIFAR nets take them; split 1347 train / 450 val, stratified, always the same.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from dataloaders.contract import DataConfig, DatasetSpec, Loaders, digest
from dataloaders.normalization import to_normalized_float
from dataloaders.torch_loader import TensorImages, build_torch_loaders
from train.context import DistContext

IMAGE_SIZE = 32
NUM_CLASSES = 10


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    spec, train, val = read()
    # No augmentation: digits are not flip-invariant (a mirrored 2 is no 2) and the scans are already centred.
    transform = v2.Compose(to_normalized_float(spec.mean, spec.std))
    # 1797 tiny images in memory: worker processes would only add start-up time
    return build_torch_loaders(spec, TensorImages(*train, transform), TensorImages(*val, transform), 0, cfg, ctx)


def read() -> tuple[DatasetSpec, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The spec, the fixed split's training and validation images and labels, for every loading backend."""
    images, labels = load_images()
    train_idx, val_idx = split(labels)
    mean, std = channel_mean_std(images[train_idx])
    train, val = (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])
    spec = DatasetSpec("digits", NUM_CLASSES, IMAGE_SIZE, mean, std, len(train_idx), len(val_idx),
                       source="sklearn.datasets.load_digits", digest=digest(*train, *val))
    return spec, train, val


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as uint8 (N, 3, 32, 32) and int64 labels."""
    from sklearn.datasets import load_digits  # imported here: ~2 s that only digits runs should pay

    digits = load_digits()
    small = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)  # values 0..16 -> [0, 1]
    big = F.interpolate(small, size=IMAGE_SIZE, mode="bilinear", align_corners=False, antialias=False)
    images = big.mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(digits.target).long()


def split(labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels.numpy())


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale the normalisation sees."""
    x = images.double().div(255)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())
