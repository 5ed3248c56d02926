import pytest
import torch

from tests.dataloaders.loading import build, collect

SMALL = dict(image_size=40, num_classes=7, synthetic_train_size=50, synthetic_val_size=20)


@pytest.mark.parametrize("settings, train, val", [
    ({}, 10 * 16 * 2, 2 * 8 * 2),  # a CPU's default: 10 training and 2 validation batches per process
    ({"steps": 3}, 3 * 16 * 2, 2 * 8 * 2),  # --steps sizes the epoch
    ({"steps": 3, "synthetic_train_size": 40, "synthetic_val_size": 9}, 40, 9),  # sizes given win
])
def test_synthetic_sizes_default_to_whole_batches_of_every_process(settings, train, val):
    loaders = build("synthetic", world_size=2, batch_size=16, val_batch_size=8, image_size=8, num_classes=3,
                    **settings)
    assert (loaders.spec.train_size, loaders.spec.val_size) == (train, val)


def test_synthetic_shapes_counts_and_partial_last_batch():
    loaders = build("synthetic", batch_size=16, val_batch_size=8, **SMALL)
    spec = loaders.spec
    assert (spec.num_classes, spec.image_size, spec.train_size, spec.val_size) == (7, 40, 50, 20)
    assert (spec.mean, spec.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (len(loaders.train), loaders.train.num_samples, len(loaders.val), loaders.val.num_samples) == (4, 50, 3, 20)

    batches = list(loaders.train)
    assert [len(labels) for _, labels in batches] == [16, 16, 16, 2]
    assert [len(labels) for _, labels in loaders.val] == [8, 8, 4]
    images, labels = batches[0]
    assert images.shape == (16, 3, 40, 40) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 7


def test_synthetic_batches_are_views_of_a_small_pool():
    loader = build("synthetic", batch_size=4, **SMALL).train
    assert len(loader.images) == 16  # 4 batches, not the 50 images of an epoch
    pool = loader.images.untyped_storage().data_ptr()
    assert all(images.untyped_storage().data_ptr() == pool for images, _ in loader)


def test_synthetic_pool_is_seeded():
    first, second = build("synthetic", seed=3, **SMALL), build("synthetic", seed=3, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(collect(first.train), collect(second.train)))
    assert not torch.equal(collect(first.train)[0][:20], collect(first.val)[0])  # separate val pool


def test_synthetic_shards_match_the_real_loaders():
    shards = [build("synthetic", rank=r, world_size=3, **SMALL) for r in range(3)]
    assert [s.train.num_samples for s in shards] == [17, 17, 17]  # padded like DistributedSampler
    assert [s.val.num_samples for s in shards] == [7, 7, 6]  # every val image once


@pytest.mark.gpu
def test_synthetic_data_is_made_on_the_device():
    from dataloaders import DataConfig, build_loaders
    from train.context import DistContext

    loaders = build_loaders(DataConfig(dataset="synthetic", **SMALL), DistContext(device=torch.device("cuda", 0)))
    images, labels = next(iter(loaders.train))
    assert images.is_cuda and labels.is_cuda
