"""Which images this rank sees: the same split for the DataLoader-backed and the synthetic loaders.

Works from ``ctx.rank``/``ctx.world_size`` alone, so no process group needs to be initialised.
"""
from __future__ import annotations

from torch.utils.data import DistributedSampler

from dataloaders.contract import DataConfig
from train.context import DistContext


class EpochSampler(DistributedSampler):
    """This rank's shuffled share of the training set, each index paired with the epoch.

    The epoch travels with the index because persistent workers never see ``set_epoch``; the dataset seeds
    the sample's augmentation from it (``torch_loader.SeededDataset``).
    """

    def __iter__(self):
        return ((index, self.epoch) for index in super().__iter__())


def train_sampler(size: int, cfg: DataConfig, ctx: DistContext) -> EpochSampler:
    # drop_last=False pads every rank to ceil(size / world_size) so all ranks run the same number of steps.
    return EpochSampler(range(size), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed,
                        drop_last=False)


def val_indices(size: int, ctx: DistContext) -> range:
    """Every image exactly once across ranks: no padding, no dropped tail (shares differ by at most one)."""
    return range(ctx.rank, size, ctx.world_size)
