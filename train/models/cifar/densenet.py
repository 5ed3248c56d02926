"""DenseNet-BC for CIFAR (Huang et al. 2017, "Densely Connected Convolutional Networks"),
after bearpaw/pytorch-classification models/cifar/densenet.py.

``densenet-bc-<depth>-<k>``: three dense blocks of (depth - 4) // 6 bottleneck layers (BN-ReLU-1x1 conv to
4k channels, BN-ReLU-3x3 conv to k new channels, concatenated to the input), joined by transitions that halve
the channels (compression 0.5) and the resolution. A stem conv to 2k channels, a final BN-ReLU before
pooling. Convs get He fan-out init, as bearpaw.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        planes = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, growth_rate, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(self.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, depth: int, growth_rate: int, num_classes: int) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n+4, not {depth}")
        n = (depth - 4) // 6
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i in range(3):
            stages.append(nn.Sequential(*(Bottleneck(planes + j * growth_rate, growth_rate) for j in range(n))))
            planes += n * growth_rate
            if i < 2:  # the "C" of BC: each transition keeps half the channels
                stages.append(Transition(planes, planes // 2))
                planes //= 2
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        he_fan_out_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def densenet_bc(num_classes: int, *, depth: int, growth_rate: int) -> nn.Module:
    return DenseNet(depth, growth_rate, num_classes)


for _depth, _k in ((100, 12), (190, 40)):
    register_model(f"densenet-bc-{_depth}-{_k}", f"DenseNet-BC-{_depth}, growth rate {_k}")(
        functools.partial(densenet_bc, depth=_depth, growth_rate=_k)
    )
