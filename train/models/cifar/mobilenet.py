"""MobileNet (v1) for CIFAR (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications"), after kuangliu/pytorch-cifar models/mobilenet.py.

The ImageNet layer table with the stem's stride dropped (32x32 input), so the last stage runs at 2x2.
Width multiplier 1. PyTorch's default initialisation, as kuangliu.
"""
import torch
from torch import nn

from train.models._registry import register_model


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv, then 1x1 pointwise conv, each followed by BN + ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, kernel_size=3, stride=stride, padding=1, groups=in_planes,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class MobileNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        layers = []
        in_planes = 32
        for out_planes, stride in CFG:
            layers.append(DepthwiseSeparable(in_planes, out_planes, stride))
            in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.linear(self.pool(x).flatten(1))


# (output channels, stride) of the 13 depthwise-separable blocks
CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


@register_model("mobilenet", "MobileNet v1, CIFAR variant (kuangliu)")
def mobilenet(num_classes: int) -> nn.Module:
    return MobileNet(num_classes)
