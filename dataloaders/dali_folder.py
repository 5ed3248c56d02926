"""ImageNet (or any data set in its layout, ``<data_dir>/{train,val}/<class>/<image>``) through DALI's file reader.

The reader shards its file list by rank (``shard_id``, ``num_shards``). Training: each epoch's list holds every
rank's share of the torch loader's sampler for that epoch, rank after rank, so reader shard r is exactly the images,
in the order, the torch loader gives rank r (shuffled per epoch, padded to equal shares). Validation: the files in
folder order, split by the reader into contiguous shards that differ by at most one image and are not padded, so
every image is seen exactly once across ranks. Decoding: ``mixed`` (nvJPEG) on a GPU, the CPU decoder otherwise;
RandomResizedCrop 224 + flip for training, Resize 256 + CenterCrop 224 for validation, like ``dataloaders.imagenet``.
"""
from __future__ import annotations

import dataclasses

from dataloaders.contract import DataConfig, DatasetSpec, Loaders
from dataloaders.dali import DaliLoader, fn, normalize, on_gpu, on_model_device, pipeline_def, types
from dataloaders.imagenet import RESIZE, folders
from dataloaders.sharding import train_sampler
from train.context import DistContext

READER = "reader"  # the file reader's name, by which the iterator asks it for the shard sizes
AREA = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults: fraction of the image's area ...
ASPECT_RATIO = (3 / 4, 4 / 3)  # ... and width / height of the crop


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    spec, train, val = folders(cfg)
    val_files, val_labels = map(list, zip(*val.samples))
    samplers = [train_sampler(len(train), cfg, dataclasses.replace(ctx, rank=rank)) for rank in range(ctx.world_size)]

    def train_pipeline(epoch: int, **settings):
        files, labels = zip(*(train.samples[i] for i in epoch_order(samplers, epoch)))
        return train_folder_pipeline(list(files), list(labels), spec, cfg, ctx, **settings)

    def val_pipeline(epoch: int, **settings):  # the same every epoch
        return val_folder_pipeline(val_files, val_labels, spec, cfg, ctx, **settings)

    return Loaders(spec, DaliLoader(train_pipeline, len(samplers[ctx.rank]), cfg.batch_size, READER, cfg, ctx),
                   DaliLoader(val_pipeline, reader_shard_size(len(val), ctx), cfg.eval_batch_size, READER, cfg, ctx))


def epoch_order(samplers, epoch: int) -> list[int]:
    """Every rank's training indices of ``epoch``, rank after rank: equal shares, so reader shard r is rank r's."""
    order = []
    for sampler in samplers:
        sampler.set_epoch(epoch)
        order += [index for index, _ in sampler]
    return order


def reader_shard_size(size: int, ctx: DistContext) -> int:
    """Images in this rank's shard: DALI's readers cut [floor(r * size / n), floor((r + 1) * size / n))."""
    return (ctx.rank + 1) * size // ctx.world_size - ctx.rank * size // ctx.world_size


def decoder_device(ctx: DistContext) -> str:
    return "mixed" if on_gpu(ctx) else "cpu"  # mixed: the file bytes on the host, nvJPEG decodes on the GPU


@pipeline_def(enable_conditionals=False)
def train_folder_pipeline(files: list[str], labels: list[int], spec: DatasetSpec, cfg: DataConfig, ctx: DistContext):
    encoded, labels = fn.readers.file(files=files, labels=labels, shard_id=ctx.rank, num_shards=ctx.world_size,
                                      pad_last_batch=False, name=READER)
    images = fn.decoders.image_random_crop(encoded, device=decoder_device(ctx), output_type=types.RGB,
                                           random_area=AREA, random_aspect_ratio=ASPECT_RATIO)
    images = fn.resize(images, size=[spec.image_size] * 2)
    return normalize(images, spec.mean, spec.std, cfg, mirror=fn.random.coin_flip()), on_model_device(labels, ctx)


@pipeline_def(enable_conditionals=False)
def val_folder_pipeline(files: list[str], labels: list[int], spec: DatasetSpec, cfg: DataConfig, ctx: DistContext):
    encoded, labels = fn.readers.file(files=files, labels=labels, shard_id=ctx.rank, num_shards=ctx.world_size,
                                      pad_last_batch=False, stick_to_shard=True, name=READER)
    images = fn.decoders.image(encoded, device=decoder_device(ctx), output_type=types.RGB)
    images = fn.resize(images, resize_shorter=RESIZE)
    return normalize(images, spec.mean, spec.std, cfg, crop=[spec.image_size] * 2), on_model_device(labels, ctx)
