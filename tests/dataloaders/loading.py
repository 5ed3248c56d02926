"""Shortcuts for the data loader tests: build one data set's loaders, read a whole split back."""
from __future__ import annotations

import torch

from dataloaders import DataConfig, Loaders, build_loaders
from train.context import DistContext


def build(dataset: str, data_dir=".", rank: int = 0, world_size: int = 1, workers: int = 0, **cfg) -> Loaders:
    """Loaders on the CPU, in the main process unless ``workers`` says otherwise."""
    config = DataConfig(dataset=dataset, data_dir=str(data_dir), workers=workers, **cfg)
    return build_loaders(config, DistContext(rank=rank, world_size=world_size))


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (images, labels) batch of one epoch, concatenated."""
    batches = list(loader)
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])
