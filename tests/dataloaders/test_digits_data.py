import torch

from tests.dataloaders.loading import build, collect


def test_digits_split_classes_and_shapes():
    loaders = build("digits", batch_size=100)
    spec = loaders.spec
    assert (spec.num_classes, spec.image_size, spec.train_size, spec.val_size) == (10, 32, 1347, 450)
    assert (loaders.train.num_samples, loaders.val.num_samples, len(loaders.train)) == (1347, 450, 14)
    images, labels = collect(loaders.val)
    assert images.shape == (450, 3, 32, 32) and images.dtype == torch.float32
    assert sorted(set(labels.tolist())) == list(range(10))  # stratified: every digit in the val split
    assert torch.equal(images[:, 0], images[:, 2])  # grey scans replicated to three channels


def test_digits_are_normalised_with_their_training_statistics():
    loaders = build("digits", batch_size=500)
    images, _ = collect(loaders.train)
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-4)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.ones(3), rtol=0, atol=1e-4)


def test_digits_are_the_same_in_every_build():
    first, second = build("digits", batch_size=64), build("digits", batch_size=64)
    assert first.spec == second.spec
    for a, b in zip(next(iter(first.train)), next(iter(second.train))):
        assert torch.equal(a, b)
    for a, b in zip(collect(first.val), collect(second.val)):
        assert torch.equal(a, b)
