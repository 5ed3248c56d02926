"""Data sets for the training engine: ``build_loaders(cfg, ctx)`` gives this rank's train and val batches on its device.

Each data set lives in its own module with a ``build(cfg, ctx) -> Loaders``; the in-memory and on-disk ones share
``torch_loader.TorchLoader``, synthetic data has its own on-device loader.
"""
from __future__ import annotations

import importlib

from dataloaders.contract import DataConfig, DatasetSpec, DeviceLoader, Loaders
from train.context import DistContext
from train.errors import UsageError

__all__ = ["DATASETS", "LOADERS", "DataConfig", "DatasetSpec", "DeviceLoader", "Loaders", "build_loaders"]

# Data set -> module of this package. Imported on demand: torchvision, timm and scikit-learn take seconds to
# import, and train.engine.config imports this package only for the names.
_MODULES = {"digits": "digits", "cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet",
            "synthetic": "synthetic"}
DATASETS = tuple(_MODULES)
# --loader dali: data set -> module. Synthetic images are made on the device: there is nothing for DALI to read.
_DALI_MODULES = {"digits": "dali_memory", "cifar10": "dali_memory", "cifar100": "dali_memory",
                 "imagenet": "dali_folder"}
_MODULES_BY_LOADER = {"torch": _MODULES, "dali": _DALI_MODULES}
LOADERS = tuple(_MODULES_BY_LOADER)


def build_loaders(cfg: DataConfig, ctx: DistContext) -> Loaders:
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}")
    if cfg.loader not in LOADERS:
        raise UsageError(f"unknown loader {cfg.loader!r}; choose one of: {', '.join(LOADERS)}")
    modules = _MODULES_BY_LOADER[cfg.loader]
    if cfg.dataset not in modules:
        raise UsageError(f"--loader {cfg.loader} cannot load the {cfg.dataset} data set; "
                         f"it loads: {', '.join(modules)}")
    loaders = importlib.import_module(f"dataloaders.{modules[cfg.dataset]}").build(cfg, ctx)
    spec = loaders.spec
    if not (spec.train_size and spec.val_size):  # every figure of a run is a sum over images, / their number
        raise UsageError(f"the {spec.name} data in {spec.source} holds {spec.train_size} training and {spec.val_size} "
                         f"validation images: a run needs at least one of each")
    return loaders
