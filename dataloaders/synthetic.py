"""Random images made once on the device: measures the model and the engine, never the input pipeline."""
from __future__ import annotations

import math

import torch

from dataloaders.contract import DataConfig, DatasetSpec, Loaders
from dataloaders.normalization import MEAN_STD
from dataloaders.sharding import train_sampler, val_indices
from train.context import DistContext

POOL_BATCHES = 4  # the pool holds this many batches; every batch is a slice of it


class SyntheticLoader:
    """``num_samples`` images per epoch served as views into a small on-device pool: no copy per step."""

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator, cfg: DataConfig,
                 ctx: DistContext):
        self.num_samples, self.batch_size = num_samples, batch_size
        pool = min(num_samples, POOL_BATCHES * batch_size)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.images = torch.empty(pool, 3, cfg.image_size, cfg.image_size, device=ctx.device,
                                  memory_format=memory_format).normal_(generator=generator)
        self.labels = torch.randint(cfg.num_classes, (pool,), generator=generator, device=ctx.device)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Every epoch serves the same pool: nothing depends on the epoch."""

    def __iter__(self):
        slots = max(1, len(self.labels) // self.batch_size)  # whole batches in the pool (1 if it is smaller)
        for step in range(len(self)):
            start = (step % slots) * self.batch_size
            size = min(self.batch_size, self.num_samples - step * self.batch_size)
            yield self.images[start:start + size], self.labels[start:start + size]


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    mean, std = MEAN_STD["synthetic"]
    spec = DatasetSpec("synthetic", cfg.num_classes, cfg.image_size, mean, std, cfg.synthetic_train_size,
                       cfg.synthetic_val_size)
    generator = torch.Generator(ctx.device).manual_seed(cfg.seed)  # one generator: train pool, then val pool
    train = SyntheticLoader(len(train_sampler(cfg.synthetic_train_size, cfg, ctx)), cfg.batch_size, generator,
                            cfg, ctx)
    val = SyntheticLoader(len(val_indices(cfg.synthetic_val_size, ctx)), cfg.eval_batch_size, generator, cfg, ctx)
    return Loaders(spec, train, val)
