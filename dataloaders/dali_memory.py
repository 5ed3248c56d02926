"""CIFAR-10/100 and digits through DALI: the decoded images, held in memory, fed by ``external_source``.

The same images, split over ranks by the same samplers, and the same augmentation as the torch loader: CIFAR
gets pad 4 + random crop 32 + horizontal flip, digits none; both are normalised with their data set's constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dataloaders import cifar, digits
from dataloaders.contract import DataConfig, DatasetSpec, Loaders
from dataloaders.dali import DaliLoader, fn, normalize, on_model_device, pipeline_def, types
from dataloaders.sharding import train_sampler, val_indices
from train.context import DistContext

CROP_PADDING = 4  # torchvision's RandomCrop(32, padding=4): zero borders, then a 32x32 window


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8: DALI's image layout
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class InMemory:
    spec: DatasetSpec
    train: Split
    val: Split
    augment: bool


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    data = READERS[cfg.dataset](cfg)
    sampler = train_sampler(len(data.train.labels), cfg, ctx)
    val_order = np.array(val_indices(len(data.val.labels), ctx))

    def train_pipeline(epoch: int, **settings):
        sampler.set_epoch(epoch)
        order = np.array([index for index, _ in sampler])
        return memory_pipeline(batches(data.train, order, cfg.batch_size), data.spec, data.augment, cfg, ctx,
                               **settings)

    def val_pipeline(epoch: int, **settings):  # the same every epoch
        return memory_pipeline(batches(data.val, val_order, cfg.eval_batch_size), data.spec, False, cfg, ctx,
                               **settings)

    return Loaders(data.spec, DaliLoader(train_pipeline, len(sampler), cfg.batch_size, None, cfg, ctx),
                   DaliLoader(val_pipeline, len(val_order), cfg.eval_batch_size, None, cfg, ctx))


def batches(split: Split, order: np.ndarray, batch_size: int):
    """The epoch's batches in ``order``; when they run out, the pipeline's epoch ends."""
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        yield split.images[indices], split.labels[indices]


@pipeline_def(enable_conditionals=False)
def memory_pipeline(source, spec: DatasetSpec, augment: bool, cfg: DataConfig, ctx: DistContext):
    images, labels = fn.external_source(source=source, num_outputs=2, batch=True, layout=["HWC", ""])
    images = on_model_device(images, ctx)
    mirror = 0
    if augment:
        offset = fn.random.uniform(values=list(range(-CROP_PADDING, CROP_PADDING + 1)), shape=[2], dtype=types.INT32)
        images = fn.slice(images, start=offset, shape=[spec.image_size] * 2, axis_names="HW",
                          out_of_bounds_policy="pad", fill_values=0)
        mirror = fn.random.coin_flip()
    return normalize(images, spec.mean, spec.std, cfg, mirror=mirror), on_model_device(labels, ctx)


def read_cifar(cfg: DataConfig) -> InMemory:
    """The pickles that ``dataloaders.cifar`` reads, read by its reader."""
    spec, train, val = cifar.read(cfg)
    return InMemory(spec, to_split(*train), to_split(*val), augment=True)


def read_digits(cfg: DataConfig) -> InMemory:
    """The split and statistics of ``dataloaders.digits``, made by its reader."""
    spec, train, val = digits.read()
    # no augmentation: digits are not flip-invariant (see dataloaders/digits.py)
    return InMemory(spec, to_split(*train), to_split(*val), augment=False)


def to_split(images: torch.Tensor, labels: torch.Tensor) -> Split:
    """uint8 (N, 3, H, W) and int64 labels -> DALI's (N, H, W, 3) as numpy arrays."""
    return Split(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy())


READERS = {"cifar10": read_cifar, "cifar100": read_cifar, "digits": read_digits}
