"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks"),
after bearpaw/pytorch-classification models/cifar/preresnet.py.

BN -> ReLU -> conv inside every block, nothing after the addition, one final BN + ReLU before pooling.
Basic blocks: depth = 6n + 2 (``preresnet-20/56/110``); bottleneck blocks (expansion 4): depth = 9n + 2
(``preresnet-164/1001``). Where a block changes shape its shortcut is a bare strided 1x1 conv (no BN, as in
bearpaw: the next block's pre-activation normalises the sum). Convs get He fan-out init.

Same trap as bearpaw's resnet.py (see ``train.models.cifar.resnet``): its preresnet.py switched to
bottleneck blocks for ``depth >= 44`` with n = (depth - 2) // 6, so its "PreResNet-110, 1.70 M" row is a
164-layer bottleneck net, our ``preresnet-164``; our ``preresnet-110`` is the true basic-block one.
"""
import functools

import torch
from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_
from train.models.cifar.resnet import blocks_per_stage, conv3x3, make_stage


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    """The shortcut: identity (``None``) where the shape is kept, else a strided 1x1 conv."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PreActBlock(nn.Module):
    expansion = 1
    convs = 2

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        # bearpaw projects the raw input, not the pre-activated one
        return out + (x if self.shortcut is None else self.shortcut(x))


class PreActBottleneck(nn.Module):
    expansion = 4
    convs = 3

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class PreResNet(nn.Module):
    def __init__(self, block: type[nn.Module], depth: int, num_classes: int) -> None:
        super().__init__()
        n = blocks_per_stage(block, depth)
        self.conv1 = conv3x3(3, 16)
        self.layer1 = make_stage(block, 16, 16, n, stride=1)
        self.layer2 = make_stage(block, 16 * block.expansion, 32, n, stride=2)
        self.layer3 = make_stage(block, 32 * block.expansion, 64, n, stride=2)
        self.bn = nn.BatchNorm2d(64 * block.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        he_fan_out_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.pool(x).flatten(1))


def preresnet(num_classes: int, *, block: type[nn.Module], depth: int) -> nn.Module:
    return PreResNet(block, depth, num_classes)


for _depth in (20, 56, 110):
    register_model(f"preresnet-{_depth}", f"PreResNet-{_depth}, basic blocks")(
        functools.partial(preresnet, block=PreActBlock, depth=_depth)
    )
for _depth in (164, 1001):
    register_model(f"preresnet-{_depth}", f"PreResNet-{_depth}, bottleneck blocks")(
        functools.partial(preresnet, block=PreActBottleneck, depth=_depth)
    )
