"""ResNeXt-29 for CIFAR (Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural Networks"),
after bearpaw/pytorch-classification models/cifar/resnext.py (CifarResNeXt, itself from prlz77/ResNeXt.pytorch).

Three stages of (depth - 2) // 9 bottlenecks (form C: 1x1, grouped 3x3, 1x1), outputs 256/512/1024
(64 * widen_factor * 2^stage, widen_factor 4); the grouped conv has ``cardinality`` groups of 64 * 2^stage
channels each (base width 64), so ``resnext-29-8x64d`` is cardinality 8. Shortcuts change shape through a
1x1 conv + BN. Initialisation as bearpaw: He fan-out on convs, He fan-in on the classifier, zero biases.
"""
import functools

import torch
from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, cardinality: int, widen_factor: int):
        super().__init__()
        d = cardinality * out_channels // widen_factor
        self.conv_reduce = nn.Conv2d(in_channels, d, kernel_size=1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, out_channels, kernel_size=1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_reduce(self.conv_reduce(x)))
        out = self.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return self.relu(out + self.shortcut(x))


def make_stage(n: int, in_channels: int, out_channels: int, stride: int, cardinality: int,
               widen_factor: int) -> nn.Sequential:
    layers = [ResNeXtBottleneck(in_channels, out_channels, stride, cardinality, widen_factor)]
    layers += [ResNeXtBottleneck(out_channels, out_channels, 1, cardinality, widen_factor) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class CifarResNeXt(nn.Module):
    def __init__(self, depth: int, cardinality: int, num_classes: int, widen_factor: int = 4) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n+2, not {depth}")
        n = (depth - 2) // 9
        widths = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.stage1 = make_stage(n, widths[0], widths[1], 1, cardinality, widen_factor)
        self.stage2 = make_stage(n, widths[1], widths[2], 2, cardinality, widen_factor)
        self.stage3 = make_stage(n, widths[2], widths[3], 2, cardinality, widen_factor)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[3], num_classes)
        he_fan_out_(self)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.classifier(self.pool(x).flatten(1))


def resnext(num_classes: int, *, cardinality: int) -> nn.Module:
    return CifarResNeXt(29, cardinality, num_classes)


for _cardinality in (8, 16):
    register_model(f"resnext-29-{_cardinality}x64d", f"ResNeXt-29, {_cardinality} groups of 64 channels")(
        functools.partial(resnext, cardinality=_cardinality)
    )
