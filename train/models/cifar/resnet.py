"""ResNet for CIFAR (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2),
after bearpaw/pytorch-classification models/cifar/resnet.py.

Three stages of widths 16/32/64 at 32x32, 16x16 and 8x8, the same number of blocks in each.
  * basic blocks (two 3x3 convs): depth = 6n + 2, ``resnet-20`` ... ``resnet-1202``;
  * bottleneck blocks (1x1, 3x3, 1x1, expansion 4): depth = 9n + 2, ``resnet-164``, ``resnet-1001``.
Where a block changes shape its shortcut is a 1x1 conv + BN projection (the paper's option B, as bearpaw;
the paper's own CIFAR nets used zero-padding, option A, which has no parameters). Convs get He fan-out init.

Known trap in bearpaw's table: its resnet.py built Bottleneck blocks whenever ``depth >= 44``, still with
n = (depth - 2) // 6 blocks per stage. Its "ResNet-110, 1.70 M" row is therefore a bottleneck net of
18 blocks per stage, 9 * 18 + 2 = 164 layers, i.e. our ``resnet-164`` (1.70 M); a true basic-block
ResNet-110 has 1.73 M parameters. Its ResNet-56 and ResNet-1202 rows are bottleneck nets too (83 and 1802
layers). Here a name always states the real depth, and the summary the block type.
"""
import functools

import torch
from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The shortcut: identity (``None``) where the shape is kept, else a strided 1x1 conv + BN."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    expansion = 1
    convs = 2

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4
    convs = 3

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return self.relu(out)


def blocks_per_stage(block: type[nn.Module], depth: int) -> int:
    """n for depth = 3 * convs-per-block * n + 2 (the stem conv and the classifier)."""
    per_block = 3 * block.convs
    if depth < per_block + 2 or (depth - 2) % per_block:
        raise ValueError(f"{block.__name__} ResNet depth must be {per_block}n+2, not {depth}")
    return (depth - 2) // per_block


def make_stage(block: type[nn.Module], in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    out_planes = planes * block.expansion
    layers = [block(in_planes, planes, stride)]
    layers += [block(out_planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], depth: int, num_classes: int) -> None:
        super().__init__()
        n = blocks_per_stage(block, depth)
        width = 64 * block.expansion
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_stage(block, 16, 16, n, stride=1)
        self.layer2 = make_stage(block, 16 * block.expansion, 32, n, stride=2)
        self.layer3 = make_stage(block, 32 * block.expansion, 64, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        he_fan_out_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def resnet(num_classes: int, *, block: type[nn.Module], depth: int) -> nn.Module:
    return ResNet(block, depth, num_classes)


for _depth in (20, 32, 44, 56, 110, 1202):
    register_model(f"resnet-{_depth}", f"ResNet-{_depth}, basic blocks")(
        functools.partial(resnet, block=BasicBlock, depth=_depth)
    )
for _depth in (164, 1001):
    register_model(f"resnet-{_depth}", f"ResNet-{_depth}, bottleneck blocks")(
        functools.partial(resnet, block=Bottleneck, depth=_depth)
    )
