import re
import shutil

import pytest
import torch

from tests.dataloaders.loading import build, collect
from tests.fakedata import write_imagefolder
from train.errors import UsageError


def test_imagefolder_sizes_shapes_and_labels(imagefolder_root):
    loaders = build("imagenet", imagefolder_root, batch_size=4)
    spec = loaders.spec
    assert (spec.num_classes, spec.image_size, spec.train_size, spec.val_size) == (3, 224, 18, 9)
    assert (len(loaders.train), loaders.train.num_samples, len(loaders.val), loaders.val.num_samples) == (5, 18, 3, 9)

    images, labels = next(iter(loaders.train))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32 and labels.dtype == torch.int64
    val_images, val_labels = collect(loaders.val)
    assert val_images.shape == (9, 3, 224, 224)
    assert val_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # class folders in sorted order, fixed order


def test_empty_class_folder_is_a_usage_error(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "val" / "emu").mkdir()
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "train"))) as info:
        build("imagenet", tmp_path)
    assert "emu" in str(info.value)


def test_folder_without_class_folders_is_a_usage_error(tmp_path):
    write_imagefolder(tmp_path)
    shutil.rmtree(tmp_path / "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "val"))):
        build("imagenet", tmp_path)


def test_missing_split_folder_is_a_usage_error(tmp_path):
    write_imagefolder(tmp_path)
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "val"))):
        build("imagenet", tmp_path)


def test_different_class_lists_are_a_usage_error(tmp_path):
    write_imagefolder(tmp_path / "a", classes=("cat", "dog"))
    write_imagefolder(tmp_path / "b", classes=("cat", "emu"))
    shutil.move(tmp_path / "b" / "val", tmp_path / "a" / "val2")
    shutil.rmtree(tmp_path / "a" / "val")
    (tmp_path / "a" / "val2").rename(tmp_path / "a" / "val")
    with pytest.raises(UsageError, match="only in train: \\['dog'\\], only in val: \\['emu'\\]"):
        build("imagenet", tmp_path / "a")
