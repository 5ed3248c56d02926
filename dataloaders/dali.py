"""What the DALI loaders share: the import guard, the device rule, normalisation, and the loader the engine iterates.

The pipeline runs where the model trains: on a GPU its operators run there (one pipeline per local rank, images
decoded by the ``mixed`` decoder); on a CPU it is built with ``device_id=None`` and runs on DALI's CPU threads.
A pipeline is built afresh for every epoch and seeded from (seed, epoch, rank), so its order and augmentation
follow from those numbers alone, as the torch loader's do: a resumed job sees what an uninterrupted one saw.
Building one takes ~0.1 s on a CPU for a small data set, inside the warm-up steps that images/s leaves out.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dataloaders.contract import DataConfig
from train.context import DistContext
from train.errors import UsageError

try:
    from nvidia.dali import Pipeline, fn, pipeline_def, types
    from nvidia.dali.backend import GetCUDADeviceCount
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
except ImportError as err:  # this module is imported only for --loader dali, so only those runs need DALI
    raise UsageError(f"--loader dali needs NVIDIA DALI, which does not import here ({err}); "
                     f"install it with: pip install -e '.[dali]'") from None

__all__ = ["DaliLoader", "device_id", "fn", "normalize", "on_gpu", "on_model_device", "pipeline_def", "types"]

OUTPUTS = ["images", "labels"]  # what every pipeline returns, in this order


class DaliLoader:
    """One split's batches for this rank, from a pipeline ``define(epoch, **settings)`` builds for each epoch.

    Batches are cut with ``LastBatchPolicy.PARTIAL``: what a reader reads beyond this rank's share to fill its
    last batch is removed, never yielded, so a split of ``num_samples`` images yields exactly that many.
    """

    def __init__(self, define: Callable[..., Pipeline], num_samples: int, batch_size: int, reader: str | None,
                 cfg: DataConfig, ctx: DistContext):
        self.define, self.reader = define, reader  # reader: the name of the pipeline's file reader, if it has one
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank = cfg.seed, ctx.rank
        self.settings = dict(batch_size=batch_size, num_threads=cfg.loader_threads, prefetch_queue_depth=cfg.prefetch,
                             device_id=device_id(ctx))  # checked now: a run lacking its GPU stops before it starts
        self.channels_last = cfg.channels_last
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        seed = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)[0]
        pipeline = self.define(self.epoch, seed=int(seed), **self.settings)
        batches = DALIGenericIterator(pipeline, OUTPUTS, reader_name=self.reader,
                                      last_batch_policy=LastBatchPolicy.PARTIAL)
        for (batch,) in batches:
            images, labels = batch["images"], batch["labels"]
            if len(labels) == 0:  # the reader's shards differ by one image: the shorter can end on an empty batch
                continue
            if self.channels_last:  # NHWC in memory, seen as NCHW: what .contiguous(channels_last) makes
                images = images.permute(0, 3, 1, 2)
            yield images, labels.view(-1).long()  # both on the model's device (``on_model_device``)


def device_id(ctx: DistContext) -> int | None:
    """The GPU DALI runs on (that of this rank's model), or None for a CPU-only pipeline."""
    if not on_gpu(ctx):
        return None
    gpu = ctx.local_rank if ctx.device.index is None else ctx.device.index
    if gpu >= GetCUDADeviceCount():
        raise UsageError(f"--loader dali: decoding on cuda:{gpu} asked, but DALI sees {GetCUDADeviceCount()} CUDA "
                         f"device(s); train with --device cpu to use DALI's CPU pipeline")
    return gpu


def on_gpu(ctx: DistContext) -> bool:
    return ctx.device.type == "cuda"


def on_model_device(data, ctx: DistContext):
    """A pipeline's output on the model's device: on a GPU copied there inside the pipeline, from DALI's own pinned
    buffers, ahead of the step that needs it, not from unpinned host memory by the loop at every step."""
    return data.gpu() if on_gpu(ctx) else data


def normalize(images, mean, std, cfg: DataConfig, mirror=0, crop=None):
    """uint8 HWC images -> float32 (x/255 - mean) / std, CHW (HWC with --channels-last), optionally flipped and
    centre-cropped: one fused DALI operator."""
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC" if cfg.channels_last else "CHW",
                                    mean=[255 * m for m in mean], std=[255 * s for s in std], mirror=mirror,
                                    crop=crop)
