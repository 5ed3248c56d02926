"""What a run trains with: the model for its data, SGD and its schedule, and one mixed-precision step.

Shared by the training loop (``train.engine.loop``), the batch-size search and the studies that time steps the
way a run does (``train.studies.frameworks``, ``train.studies.analyze``).
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dataloaders import DatasetSpec
from train.engine.breakdown import StepBreakdown
from train.engine.config import TrainConfig
from train.models import create_model, resolve_model

AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Step:
    """One optimisation step with one mixed-precision path (the scaler is a no-op unless fp16).

    ``eager`` is ``model`` uncompiled (by default ``model`` itself): a compiled model trains a batch of another shape
    (an epoch's short last batch) with it, eagerly, since a new shape makes Dynamo compile a second, dynamic-shape
    graph, which it then prefers for every later batch: later epochs would run, and be timed, on another graph."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    breakdown: StepBreakdown = field(default_factory=StepBreakdown.disabled)  # marks the parts of sampled steps
    eager: nn.Module | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 eager: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.eager if eager and self.eager is not None else self.model
        with self.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        self.breakdown.mark("forward")
        self.optimizer.zero_grad()  # None grads by default; Horovod's optimizer takes no set_to_none
        self.scaler.scale(loss).backward()
        self.breakdown.mark_backward()
        with self.breakdown.update(self.optimizer):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.breakdown.mark("optimizer")
        return loss.detach(), logits.detach()


def synthetic_like_the_arch(cfg: TrainConfig) -> TrainConfig:
    """Synthetic images of the arch's own input unless --image-size/--num-classes say otherwise: a CIFAR net's 32 px
    and 10 classes, an ImageNet net's native crop and 1000 classes (a name both families have is the CIFAR net,
    unless --image-size is above 64, as ``build_model`` decides)."""
    data = cfg.data
    if data.dataset != "synthetic" or (data.image_size and data.num_classes):
        return cfg
    entry = resolve_model(cfg.arch, "cifar" if (data.image_size or 32) <= 64 else "imagenet")
    data = dataclasses.replace(data, image_size=data.image_size or entry.input_size,
                               num_classes=data.num_classes or (10 if entry.family == "cifar" else 1000))
    return dataclasses.replace(cfg, data=data)


def build_model(cfg: TrainConfig, spec: DatasetSpec) -> tuple[nn.Module, str]:
    """The model for ``spec``: 32x32-ish data prefers the CIFAR nets of a shared name, larger data ImageNet's."""
    prefer = "cifar" if spec.image_size <= 64 else "imagenet"
    entry = resolve_model(cfg.arch, prefer)
    return create_model(cfg.arch, spec.num_classes, prefer=prefer, dropout=cfg.dropout), entry.qualified_name


def scaled_lr(cfg: TrainConfig, world_size: int) -> float:
    """--lr is the rate for one process's batch; linear scaling (Goyal et al. 2017) grows it with the global batch."""
    return cfg.lr * world_size if cfg.lr_scaling == "linear" else cfg.lr


def build_optimizer(model: nn.Module, cfg: TrainConfig, world_size: int, device: torch.device) -> torch.optim.SGD:
    kernels = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
    return torch.optim.SGD(model.parameters(), lr=scaled_lr(cfg, world_size), momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, **kernels[sgd_impl(cfg, device)])


def sgd_impl(cfg: TrainConfig, device: torch.device) -> str:
    """--sgd-impl auto: the fused kernel on CUDA (one launch updates every parameter); torch's default on CPU."""
    if cfg.sgd_impl != "auto":
        return cfg.sgd_impl
    return "fused" if device.type == "cuda" else "for-loop"


def lr_factor(cfg: TrainConfig, epochs_done: int) -> float:
    """The schedule, as the factor on the initial rate of the epoch after ``epochs_done``: a closed form of the
    settings and the epoch alone, not the recursion torch's cosine scheduler steps through, so that a run resumed
    with another ``--epochs`` or ``--milestones`` is exactly where an uninterrupted run with them would be."""
    if cfg.schedule == "multistep":
        return cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epochs_done)
    if cfg.schedule == "cosine":
        return (1 + math.cos(math.pi * epochs_done / cfg.epochs)) / 2
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, world_size: int,
                    epochs_done: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-epoch schedule of ``cfg``, ``epochs_done`` epochs in. The optimizer's rate, momentum and weight
    decay are set from ``cfg`` first: a resumed optimizer's state brings its momentum buffers, and with them
    the settings of the run that saved it, which the settings given on resuming override."""
    lr = scaled_lr(cfg, world_size)
    for group in optimizer.param_groups:
        group.update(lr=lr, initial_lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg), last_epoch=epochs_done - 1)


def maybe_compile(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    return torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast context for ``precision`` (fp32: a context that does nothing)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
