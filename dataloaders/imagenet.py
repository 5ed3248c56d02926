"""ImageNet (or any data set in its layout): ``<data_dir>/{train,val}/<class>/<image>``, decoded by PIL in workers."""
from __future__ import annotations

from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from dataloaders.contract import DataConfig, DatasetSpec, Loaders, digest
from dataloaders.normalization import MEAN_STD, to_normalized_float
from dataloaders.torch_loader import build_torch_loaders
from train.context import DistContext
from train.errors import UsageError

IMAGE_SIZE = 224
RESIZE = 256  # validation: shorter side, then the centre IMAGE_SIZE crop


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    mean, std = MEAN_STD["imagenet"]
    normalize = to_normalized_float(mean, std)
    spec, train, val = folders(cfg, v2.Compose([v2.RandomResizedCrop(IMAGE_SIZE), v2.RandomHorizontalFlip(),
                                                 *normalize]),
                               v2.Compose([v2.Resize(RESIZE), v2.CenterCrop(IMAGE_SIZE), *normalize]))
    return build_torch_loaders(spec, train, val, cfg.workers, cfg, ctx)


def folders(cfg: DataConfig, train_transform=None, val_transform=None) -> tuple[DatasetSpec, ImageFolder, ImageFolder]:
    """The spec and the ``train/`` and ``val/`` image folders of ``cfg.data_dir``, for every loading backend; the
    digest is over the file lists (names and classes), reading no image."""
    root = Path(cfg.data_dir)
    train, val = image_folder(root / "train", train_transform), image_folder(root / "val", val_transform)
    if train.classes != val.classes:
        only_train, only_val = set(train.classes) - set(val.classes), set(val.classes) - set(train.classes)
        raise UsageError(f"{root / 'train'} and {root / 'val'} have different class folders (only in train: "
                         f"{sorted(only_train)}, only in val: {sorted(only_val)}); give both the same class folders")
    mean, std = MEAN_STD["imagenet"]
    files = [(str(Path(path).relative_to(root)), label) for folder in (train, val) for path, label in folder.samples]
    spec = DatasetSpec("imagenet", len(train.classes), IMAGE_SIZE, mean, std, len(train), len(val),
                       source=str(root.resolve()), digest=digest(files))
    return spec, train, val


def image_folder(path: Path, transform) -> ImageFolder:
    if not path.is_dir():
        raise UsageError(f"image folder {path} does not exist (ImageNet cannot be downloaded automatically); "
                         f"put one sub-folder of images per class there")
    try:
        return ImageFolder(path, transform, loader=load_rgb)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise UsageError(f"{path}: {e}; every class folder under it needs at least one image") from None


def load_rgb(path: str) -> Image.Image:
    """PIL's decoding, with a broken file named in one line. A broken image stops the run rather than being
    skipped: a skipped image would change what the run measures; the training loop says how the run goes on once
    the file is fixed or removed (from its last checkpoint, if it has one)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError) as err:  # unidentified, truncated or corrupt; PIL raises both kinds
        raise UsageError(f"{path}: unreadable image ({err}); fix or remove it") from None
