"""The DataLoader-backed loader shared by the in-memory (CIFAR, digits) and on-disk (ImageNet) data sets."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from dataloaders.contract import DataConfig, DatasetSpec, Loaders
from dataloaders.sharding import EpochSampler, train_sampler, val_indices
from train.context import DistContext
from train.errors import UsageError


class TensorImages(Dataset):
    """uint8 images (N, 3, H, W) and int64 labels held in memory; ``transform`` makes one image a model input."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


class SeededDataset(Dataset):
    """Draws each sample's augmentation from a seed of (seed, epoch, index), keys coming from ``EpochSampler``.

    Augmentation then depends on neither the worker count nor what (persistent) workers did in earlier epochs,
    so a job resumed at epoch k sees exactly what an uninterrupted one saw.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        # With workers=0 this runs in the training process: leave its CPU RNG as it was. Tuples of ints hash
        # the same in every process (no hash randomisation for ints).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(hash((self.seed, epoch, index)) % 2**63)
            return self.dataset[index]


class TorchLoader:
    """A DataLoader over this rank's share whose batches arrive on the device in the model's memory format."""

    def __init__(self, dataset: Dataset, sampler, batch_size: int, workers: int, cfg: DataConfig,
                 ctx: DistContext):
        self.sampler = sampler
        self.num_samples = len(sampler)
        self.device = ctx.device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=ctx.device.type == "cuda",
            # the worker base seed then comes from here, not from the training process's global RNG
            generator=torch.Generator().manual_seed(cfg.seed))

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, EpochSampler):  # validation order is fixed
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        try:
            yield from self._batches()
        except UsageError as err:  # raised in a worker: DataLoader puts the worker's traceback in the message
            raise UsageError(str(err).strip().splitlines()[-1].split("UsageError: ", 1)[-1]) from None

    def _batches(self):
        for images, labels in self.loader:
            # copy first, then convert the layout on the device, where it is cheap
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield images, labels.to(self.device, non_blocking=True)


def build_torch_loaders(spec: DatasetSpec, train: Dataset, val: Dataset, workers: int, cfg: DataConfig,
                        ctx: DistContext) -> Loaders:
    """Training shuffled and augmented per (seed, epoch, rank), validation in a fixed order split over ranks."""
    return Loaders(
        spec,
        TorchLoader(SeededDataset(train, cfg.seed), train_sampler(len(train), cfg, ctx), cfg.batch_size, workers,
                    cfg, ctx),
        TorchLoader(val, val_indices(len(val), ctx), cfg.eval_batch_size, workers, cfg, ctx))
