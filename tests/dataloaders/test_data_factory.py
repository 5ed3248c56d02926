import dataclasses

import pytest
import torch

from dataloaders import DATASETS, LOADERS, DataConfig
from dataloaders.normalization import MEAN_STD
from tests.dataloaders.loading import build
from tests.fakedata import write_cifar10
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


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_the_spec_names_where_the_data_is_and_a_digest_of_it(cifar10_root, tmp_path, loader):
    spec = build("cifar10", cifar10_root, loader=loader).spec
    assert spec.source == str((cifar10_root / "cifar-10-batches-py").resolve()) and len(spec.digest) == 8
    assert build("cifar10", cifar10_root).spec == spec  # both backends read the same data
    assert build("cifar10", write_cifar10(tmp_path, seed=1), loader=loader).spec.digest != spec.digest


def test_digests_of_the_other_data_sets_follow_their_content(imagefolder_root):
    assert build("digits").spec.digest == build("digits").spec.digest
    synthetic = dict(image_size=8, num_classes=3, batch_size=4)
    assert build("synthetic", seed=1, **synthetic).spec.digest != build("synthetic", seed=2, **synthetic).spec.digest
    spec = build("imagenet", imagefolder_root).spec
    assert spec.source == str(imagefolder_root.resolve()) and spec.digest == build("imagenet", imagefolder_root).spec.digest
