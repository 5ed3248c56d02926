"""Wide ResNet for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks"),
after bearpaw/pytorch-classification models/cifar/wrn.py.

``wrn-<depth>-<k>``: three stages of n = (depth - 4) / 6 pre-activation basic blocks, widths 16k/32k/64k.
Where a block changes shape its shortcut is a strided 1x1 conv. ``dropout`` sits between the two convs of
every block, as in the paper (0.3 in its CIFAR runs; none here unless asked).
Initialisation as in bearpaw: He fan-out on convs, zero bias on the classifier.
"""
import functools

import torch
from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_
from train.models.cifar.resnet import conv3x3


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        # Identity at p = 0: the module tree then shows dropout only where it was asked for
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(out_planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.conv2(self.dropout(out))
        # the projection reads the pre-activated input (bearpaw, and the authors' code); identity the raw one
        return out + (x if self.shortcut is None else self.shortcut(pre))


def make_stage(n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> nn.Sequential:
    layers = [WideBasic(in_planes, out_planes, stride, dropout)]
    layers += [WideBasic(out_planes, out_planes, 1, dropout) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, not {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(3, 16)
        self.block1 = make_stage(n, 16, widths[0], 1, dropout)
        self.block2 = make_stage(n, widths[0], widths[1], 2, dropout)
        self.block3 = make_stage(n, widths[1], widths[2], 2, dropout)
        self.bn = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        he_fan_out_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.pool(x).flatten(1))


def wrn(num_classes: int, dropout: float = 0.0, *, depth: int, widen_factor: int) -> nn.Module:
    return WideResNet(depth, widen_factor, num_classes, dropout)


for _depth, _k in ((16, 4), (16, 8), (28, 10), (40, 4)):
    register_model(f"wrn-{_depth}-{_k}", f"Wide ResNet-{_depth}-{_k}, optional dropout")(
        functools.partial(wrn, depth=_depth, widen_factor=_k)
    )
