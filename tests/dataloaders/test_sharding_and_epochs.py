import math

import pytest
import torch

from tests.dataloaders.loading import build, collect


@pytest.mark.parametrize("world_size", [2, 3])
def test_val_shards_cover_every_image_once(world_size, cifar10_root):
    full_images, full_labels = collect(build("cifar10", cifar10_root, batch_size=4).val)  # 17 images
    shards = [build("cifar10", cifar10_root, rank=r, world_size=world_size, batch_size=4)
              for r in range(world_size)]
    assert sum(s.val.num_samples for s in shards) == 17
    for rank, shard in enumerate(shards):
        images, labels = collect(shard.val)
        assert len(labels) == shard.val.num_samples
        assert torch.equal(labels, full_labels[rank::world_size])
        assert torch.equal(images, full_images[rank::world_size])


@pytest.mark.parametrize("world_size", [2, 3])
def test_train_shards_have_equal_padded_lengths(world_size, cifar10_root):
    for rank in range(world_size):
        train = build("cifar10", cifar10_root, rank=rank, world_size=world_size, batch_size=8).train
        per_rank = math.ceil(100 / world_size)
        assert train.num_samples == per_rank and len(train) == math.ceil(per_rank / 8)
        assert sum(len(labels) for _, labels in train) == per_rank


def test_set_epoch_fixes_the_training_order(cifar10_root):
    first, second = (build("cifar10", cifar10_root, batch_size=16).train for _ in range(2))
    first.set_epoch(3)
    second.set_epoch(3)
    for a, b in zip(next(iter(first)), next(iter(second))):
        assert torch.equal(a, b)
    second.set_epoch(4)
    assert not torch.equal(next(iter(first))[1], next(iter(second))[1])


def test_resumed_job_sees_what_an_uninterrupted_one_saw(cifar10_root):
    """Augmentation is seeded per sample: the worker count and earlier epochs of persistent workers don't matter."""
    uninterrupted = build("cifar10", cifar10_root, batch_size=32, workers=2).train
    for epoch in range(2):
        uninterrupted.set_epoch(epoch)
        collect(uninterrupted)
    uninterrupted.set_epoch(2)
    resumed = build("cifar10", cifar10_root, batch_size=32).train
    resumed.set_epoch(2)
    for a, b in zip(collect(uninterrupted), collect(resumed)):
        assert torch.equal(a, b)


def test_validation_order_ignores_the_epoch(cifar10_root):
    val = build("cifar10", cifar10_root).val
    before = collect(val)
    val.set_epoch(5)
    assert all(torch.equal(a, b) for a, b in zip(before, collect(val)))


def test_loading_leaves_the_global_rng_alone(cifar10_root):
    train = build("cifar10", cifar10_root, batch_size=32).train
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    collect(train)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("dataset", ["cifar10", "synthetic"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_flag(dataset, channels_last, cifar10_root):
    loaders = build(dataset, cifar10_root, batch_size=8, channels_last=channels_last, image_size=32, num_classes=10,
                    synthetic_train_size=20, synthetic_val_size=10)
    for loader in (loaders.train, loaders.val):
        images, _ = next(iter(loader))
        assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert images.is_contiguous() != channels_last
