"""Generated data sets shared read-only by the data loader tests (tests that damage files write their own)."""
import pytest

from tests.fakedata import write_cifar10, write_cifar100, write_imagefolder


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))  # 5 x 20 train, 17 val


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar100"))  # 60 train, 23 val


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))  # 3 classes x (6 train, 3 val)
