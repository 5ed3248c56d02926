"""--loader dali against --loader torch on the same generated data: counts, labels, shapes, layout, sharding,
augmentation, and the errors a user can meet. DALI runs its CPU pipeline here (``device_id=None``)."""
import collections
import pickle
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dataloaders import DataConfig, build_loaders
from dataloaders.normalization import MEAN_STD
from dataloaders.sharding import train_sampler
from tests.dataloaders.loading import build, collect
from tests.fakedata import write_imagefolder
from train.context import DistContext
from train.errors import UsageError

pytest.importorskip("nvidia.dali", reason="--loader dali needs NVIDIA DALI: pip install -e '.[dali]'")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """3 classes x (6 train, 3 val) JPEGs from 40 to 399 pixels a side: shrunk and enlarged, tall and wide."""
    return write_imagefolder(tmp_path_factory.mktemp("jpegs"), widths=(40, 400), heights=(30, 400))


def shards(dataset, root, world_size, **cfg):
    """Both loaders' (torch, dali) builds for every rank of a job of ``world_size``."""
    return [{loader: build(dataset, root, rank=rank, world_size=world_size, loader=loader, **cfg)
             for loader in ("torch", "dali")} for rank in range(world_size)]


def labels_of(loader) -> list[int]:
    return [label for _, labels in loader for label in labels.tolist()]


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_imagefolder_dali_yields_what_torch_yields(jpegs, world_size, channels_last):
    jobs = shards("imagenet", jpegs, world_size, batch_size=4, channels_last=channels_last)
    assert jobs[0]["dali"].spec == jobs[0]["torch"].spec
    val_labels = {"torch": [], "dali": []}
    for job in jobs:
        for split in ("train", "val"):
            for loader in ("torch", "dali"):
                batches = list(getattr(job[loader], split))
                assert sum(len(labels) for _, labels in batches) == getattr(job[loader], split).num_samples
                assert len(batches) == len(getattr(job[loader], split))
                images, labels = batches[0]
                assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
                assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
                assert labels.dtype == torch.int64
        # training: the same sampler, so the same images in the same order, rank by rank (padded to equal shares)
        assert job["dali"].train.num_samples == job["torch"].train.num_samples == -(-18 // world_size)
        assert labels_of(job["dali"].train) == labels_of(job["torch"].train)
        for loader in ("torch", "dali"):
            val_labels[loader] += labels_of(job[loader].val)
    # validation: DALI's reader cuts other shards than the torch loader, but every image counts once in all
    assert sorted(val_labels["dali"]) == sorted(val_labels["torch"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def nearest(images: torch.Tensor, references: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """For each image, the index of the closest reference and the mean absolute difference to it."""
    distance = (images[:, None] - references[None]).abs().mean(dim=(2, 3, 4))
    smallest, index = distance.min(dim=1)
    return index.tolist(), smallest


def test_imagefolder_val_images_match_torch_up_to_resampling(jpegs):
    torch_images, torch_labels = collect(build("imagenet", jpegs, batch_size=4).val)
    dali_images, dali_labels = collect(build("imagenet", jpegs, batch_size=4, loader="dali").val)
    assert torch.equal(dali_labels, torch_labels)  # one rank: folder order for both
    assert nearest(dali_images, torch_images)[0] == list(range(9))
    # Resize 256 + CenterCrop 224 by either library: the pixels differ where their antialiasing filters meet the
    # noise, the channel statistics by < 1e-3 here (swapped channels or another mean/std would shift them by ~1)
    for statistic in (torch.mean, torch.std):
        torch.testing.assert_close(statistic(dali_images, dim=(2, 3)), statistic(torch_images, dim=(2, 3)),
                                   rtol=0, atol=0.01)


@pytest.mark.parametrize("world_size", [2, 4])
def test_imagefolder_val_shards_see_every_image_once_in_every_pass(jpegs, world_size):
    reference, _ = collect(build("imagenet", jpegs, batch_size=2).val)
    vals = [build("imagenet", jpegs, rank=r, world_size=world_size, batch_size=2, loader="dali").val
            for r in range(world_size)]
    assert sum(val.num_samples for val in vals) == 9
    for epoch in (1, 2):
        seen = []
        for val in vals:
            val.set_epoch(epoch)
            images, _ = collect(val)
            assert len(images) == val.num_samples
            seen += nearest(images, reference)[0]
        assert sorted(seen) == list(range(9))


def read_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def normalised(raw: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(-1, 3, 1, 1) for v in MEAN_STD["cifar10"])
    return (raw / 255 - mean) / std


def crop_and_flip(raw: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """torchvision's RandomCrop(32, padding=4) window at (dy, dx) in -4..4, then the horizontal flip."""
    window = F.pad(raw, (4, 4, 4, 4))[..., 4 + dy:36 + dy, 4 + dx:36 + dx]
    return window.flip(-1) if flip else window


def augmentation_of(image: torch.Tensor, raw: torch.Tensor):
    """The (dy, dx, flip) that turns ``raw`` into ``image``, or None."""
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            for flip in (False, True):
                if torch.allclose(normalised(crop_and_flip(raw, dy, dx, flip))[0], image, atol=1e-5):
                    return dy, dx, flip
    return None


@pytest.mark.parametrize("world_size", [1, 2])
def test_cifar_dali_trains_on_torch_samples_with_the_same_augmentation(cifar10_root, world_size):
    folder = cifar10_root / "cifar-10-batches-py"
    raw = torch.from_numpy(np.concatenate([read_pickle(folder / f"data_batch_{i}")[b"data"] for i in range(1, 6)]))
    raw = raw.view(-1, 3, 32, 32).float()
    used = collections.Counter()
    for rank, job in enumerate(shards("cifar10", cifar10_root, world_size, batch_size=8)):
        for loader in ("torch", "dali"):
            job[loader].train.set_epoch(3)
        assert len(job["dali"].train) == len(job["torch"].train)
        images, labels = collect(job["dali"].train)
        assert len(labels) == job["torch"].train.num_samples == 100 // world_size
        assert labels.tolist() == labels_of(job["torch"].train)
        sampler = train_sampler(100, DataConfig(), DistContext(rank=rank, world_size=world_size))
        sampler.set_epoch(3)
        for image, (index, _) in zip(images, sampler):
            found = augmentation_of(image, raw[index])
            assert found is not None, f"image {index} is no pad-4 crop (+ flip) of itself"
            used[found[:2] != (0, 0), found[2]] += 1
    assert len(used) == 4  # shifted or not, flipped or not: all four happen


def test_cifar_dali_epochs_are_set_by_seed_and_epoch(cifar10_root):
    first, second = (build("cifar10", cifar10_root, batch_size=16, loader="dali").train for _ in range(2))
    for loader in (first, second):
        loader.set_epoch(2)
    for a, b in zip(collect(first), collect(second)):
        assert torch.equal(a, b)  # a job resumed at epoch 2 sees what an uninterrupted one saw
    images, _ = collect(first)
    second.set_epoch(3)
    assert not torch.equal(collect(second)[0], images)


@pytest.mark.parametrize("world_size", [1, 2])
def test_cifar_dali_val_is_torch_val(cifar10_root, world_size):
    for job in shards("cifar10", cifar10_root, world_size, batch_size=4):  # 17 images: not divisible by 2
        (torch_images, torch_labels), (dali_images, dali_labels) = (collect(job[k].val) for k in ("torch", "dali"))
        assert torch.equal(dali_labels, torch_labels) and job["dali"].val.num_samples == len(dali_labels)
        torch.testing.assert_close(dali_images, torch_images, rtol=0, atol=1e-5)


def test_cifar100_dali_partial_last_batch(cifar100_root):
    loaders = build("cifar100", cifar100_root, batch_size=16, loader="dali")
    assert [len(labels) for _, labels in loaders.train] == [16, 16, 16, 12]
    assert [len(labels) for _, labels in loaders.val] == [16, 7]


def test_digits_dali_is_torch_without_augmentation():
    torch_loaders, dali_loaders = (build("digits", batch_size=500, loader=loader) for loader in ("torch", "dali"))
    assert dali_loaders.spec == torch_loaders.spec
    for split in ("train", "val"):
        (torch_images, torch_labels), (dali_images, dali_labels) = (
            collect(getattr(loaders, split)) for loaders in (torch_loaders, dali_loaders))
        assert torch.equal(dali_labels, torch_labels)
        torch.testing.assert_close(dali_images, torch_images, rtol=0, atol=1e-5)


def test_synthetic_data_is_refused():
    with pytest.raises(UsageError, match="--loader dali cannot load the synthetic data set"):
        build("synthetic", loader="dali")


def test_gpu_decoding_without_a_gpu_is_one_clear_line(cifar10_root):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar10_root), loader="dali")
    with pytest.raises(UsageError, match="--device cpu") as info:
        build_loaders(cfg, DistContext(device=torch.device("cuda", 0)))
    assert "\n" not in str(info.value)


def test_missing_dali_is_one_clear_line(cifar10_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # what an environment without DALI makes of the import
    for module in ("dataloaders.dali", "dataloaders.dali_memory", "dataloaders.dali_folder"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[dali\]'") as info:
        build("cifar10", cifar10_root, loader="dali")
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_gpu_pipeline_matches_the_cpu_pipeline(dataset, cifar10_root, jpegs):
    root = {"cifar10": cifar10_root, "imagenet": jpegs}[dataset]
    cfg = DataConfig(dataset=dataset, data_dir=str(root), loader="dali", batch_size=4, channels_last=True)
    on_gpu, on_cpu = (build_loaders(cfg, DistContext(device=torch.device(device))) for device in ("cuda:0", "cpu"))
    for split in ("train", "val"):
        images, labels = collect(getattr(on_gpu, split))
        assert images.is_cuda and labels.is_cuda and images.is_contiguous(memory_format=torch.channels_last)
        assert len(labels) == getattr(on_cpu, split).num_samples
    (gpu_images, gpu_labels), (cpu_images, cpu_labels) = collect(on_gpu.val), collect(on_cpu.val)
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    # nvJPEG and the CPU decoder round differently; the channel statistics agree
    torch.testing.assert_close(gpu_images.cpu().mean(dim=(2, 3)), cpu_images.mean(dim=(2, 3)), rtol=0, atol=0.01)
