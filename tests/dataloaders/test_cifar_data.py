import pickle
import re
import time

import numpy as np
import pytest
import torch

from dataloaders.normalization import MEAN_STD
from tests.dataloaders.loading import build, collect
from tests.fakedata import write_cifar10
from train.errors import UsageError

# data set -> (root fixture, folder, validation file, label key, classes, train size, val size)
CIFAR = {
    "cifar10": ("cifar10_root", "cifar-10-batches-py", "test_batch", b"labels", 10, 100, 17),
    "cifar100": ("cifar100_root", "cifar-100-python", "test", b"fine_labels", 100, 60, 23),
}


def read_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def normalised(data: np.ndarray, dataset: str) -> torch.Tensor:
    """(N, 3072) uint8 as written -> what the val loader must yield, computed by hand."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in MEAN_STD[dataset])
    return (torch.from_numpy(data).view(-1, 3, 32, 32).float() / 255 - mean) / std


@pytest.mark.parametrize("dataset", CIFAR)
def test_cifar_sizes_labels_and_normalisation(dataset, request):
    fixture, folder, val_file, label_key, classes, train_size, val_size = CIFAR[dataset]
    root = request.getfixturevalue(fixture)
    loaders = build(dataset, root, batch_size=8)
    spec = loaders.spec
    assert (spec.num_classes, spec.image_size, spec.train_size, spec.val_size) == (classes, 32, train_size, val_size)
    assert loaders.train.num_samples == train_size and len(loaders.train) == -(-train_size // 8)

    batches = list(loaders.train)
    assert len(batches[-1][1]) == (train_size % 8 or 8)  # the last partial batch is kept
    images, labels = batches[0]
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert sum(len(labels) for _, labels in batches) == train_size

    written = read_pickle(root / folder / val_file)
    val_images, val_labels = collect(loaders.val)
    assert val_labels.tolist() == list(written[label_key])
    torch.testing.assert_close(val_images, normalised(written[b"data"], dataset), rtol=0, atol=1e-5)


def test_train_images_are_augmented(cifar10_root):
    loaders = build("cifar10", cifar10_root, batch_size=100)
    train_images, _ = next(iter(loaders.train))
    data = np.concatenate([read_pickle(cifar10_root / "cifar-10-batches-py" / f"data_batch_{i}")[b"data"]
                           for i in range(1, 6)])
    plain = normalised(data, "cifar10")
    # a crop or flip of a noisy image matches no image of the set as written
    untouched = [any(torch.allclose(image, p, atol=1e-5) for p in plain) for image in train_images]
    assert not all(untouched)


def test_data_dir_may_be_the_batches_folder(cifar10_root):
    loaders = build("cifar10", cifar10_root / "cifar-10-batches-py")
    assert (loaders.spec.train_size, loaders.spec.val_size) == (100, 17)


def test_str_keys_are_accepted(tmp_path):
    path = write_cifar10(tmp_path) / "cifar-10-batches-py" / "test_batch"
    batch = read_pickle(path)
    path.write_bytes(pickle.dumps({k.decode(): v for k, v in batch.items()}))
    _, labels = collect(build("cifar10", tmp_path).val)
    assert labels.tolist() == batch[b"labels"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def _batch(data, labels):
    """A well-formed pickle whose content is wrong."""
    return lambda path: path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}))


CORRUPTIONS = {
    "truncated": _truncate,
    "garbage": _garbage,
    "wrong shape": _batch(np.zeros((20, 1024), np.uint8), [0] * 20),
    "wrong dtype": _batch(np.zeros((20, 3072), np.float32), [0] * 20),
    "missing labels": lambda path: path.write_bytes(pickle.dumps({b"data": np.zeros((20, 3072), np.uint8)})),
    "label count": _batch(np.zeros((20, 3072), np.uint8), [0]),
    "label range": _batch(np.zeros((2, 3072), np.uint8), [0, 10]),
    "not a dict": lambda path: path.write_bytes(pickle.dumps([1, 2, 3])),
    "missing file": lambda path: path.unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_corrupt_batch_is_a_usage_error_naming_the_file(corrupt, tmp_path):
    path = write_cifar10(tmp_path) / "cifar-10-batches-py" / "data_batch_3"
    CORRUPTIONS[corrupt](path)
    with pytest.raises(UsageError, match="data_batch_3") as info:
        build("cifar10", tmp_path)
    assert "\n" not in str(info.value)


def test_missing_data_dir_is_a_usage_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        build("cifar100", missing)


def test_download_offline_fails_fast_with_a_usage_error(tmp_path):
    """This machine has no network: the real download path must give up within seconds, with one clear line."""
    start = time.monotonic()
    with pytest.raises(UsageError, match="cifar-10-python.tar.gz") as info:
        build("cifar10", tmp_path, download=True)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "network" in message and str(tmp_path / "cifar-10-batches-py") in message and "\n" not in message


class _RunsCode:
    """What a hostile data folder could hold: a pickle that calls a function of the pickler's choosing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def test_a_batch_that_would_run_code_is_refused_without_running_it(tmp_path):
    path = write_cifar10(tmp_path / "data") / "cifar-10-batches-py" / "data_batch_2"
    marker = tmp_path / "code-ran"
    path.write_bytes(pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 20,
                                   b"payload": _RunsCode(marker)}, protocol=2))
    with pytest.raises(UsageError, match=r"data_batch_2.*posix\.mkdir|data_batch_2.*os\.mkdir") as info:
        build("cifar10", tmp_path / "data")
    assert not marker.exists() and "\n" not in str(info.value)
