import dataclasses

import pytest
import torch

from dataloaders import DATASETS, LOADERS, DataConfig
from dataloaders.normalization import MEAN_STD
from tests.dataloaders.loading import build
from train.errors import UsageError


def test_names_of_the_contract():
    assert DATASETS == ("digits", "cifar10", "cifar100", "imagenet", "synthetic")
    assert LOADERS == ("torch", "dali")


@pytest.mark.parametrize("field, value", [("dataset", "mnist"), ("loader", "ffcv")])
def test_unknown_names_are_usage_errors(field, value):
    cfg = {"dataset": "synthetic", field: value}
    with pytest.raises(UsageError, match=f"unknown {field} '{value}'"):
        build(**cfg)


def test_val_batch_size_defaults_to_batch_size():
    assert DataConfig(batch_size=32).eval_batch_size == 32
    assert DataConfig(batch_size=32, val_batch_size=100).eval_batch_size == 100
    assert "eval_batch_size" not in {f.name for f in dataclasses.fields(DataConfig)}


def test_imagenet_constants_are_timms():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert MEAN_STD["imagenet"] == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))


@pytest.mark.gpu
def test_batches_arrive_on_the_gpu(cifar10_root):
    from dataloaders import build_loaders
    from train.context import DistContext

    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar10_root), workers=2, channels_last=True)
    loaders = build_loaders(cfg, DistContext(device=torch.device("cuda", 0)))
    for loader in (loaders.train, loaders.val):
        images, labels = next(iter(loader))
        assert images.is_cuda and labels.is_cuda and images.is_contiguous(memory_format=torch.channels_last)
