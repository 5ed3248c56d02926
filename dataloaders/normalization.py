"""Every data set's channel mean/std in one table, and the transform tail that applies them."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

MEAN_STD = {
    # bearpaw/pytorch-classification's CIFAR constants
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # timm.data.IMAGENET_DEFAULT_MEAN/STD (a test pins them; importing timm here would cost every run seconds)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # random normal images are already standardised
    "synthetic": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # digits: computed from its training split, see dataloaders/digits.py
}


def to_normalized_float(mean, std) -> list[v2.Transform]:
    """uint8 image (CHW tensor or PIL) -> plain float32 CHW tensor (x/255 - mean) / std."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
