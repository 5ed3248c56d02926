"""ShuffleNetV2 1x for CIFAR (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design"), after kuangliu/pytorch-cifar models/shufflenetv2.py (net_size 1).

The ImageNet net without the stem's stride and max-pool (32x32 input), so the three stages run at
16x16, 8x8 and 4x4. Each stage is one downsampling unit followed by 3/7/3 basic units (the paper's
4/8/4 repeats). PyTorch's default initialisation, as kuangliu.
"""
import torch
import torch.nn.functional as F
from torch import nn

from train.models._registry import register_model


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """[N, g*c, H, W] -> [N, c*g, H, W]: interleave the channels of the two branches."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class BasicUnit(nn.Module):
    """Stride 1: half the channels pass through, the other half go 1x1 -> depthwise 3x3 -> 1x1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1))


class DownUnit(nn.Module):
    """Stride 2: both branches see the whole input and each makes half of the output channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left: depthwise 3x3 (stride 2) -> 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 -> depthwise 3x3 (stride 2) -> 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, out_channels: tuple[int, ...], num_blocks: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        stages = []
        in_channels = 24
        for channels, blocks in zip(out_channels[:3], num_blocks):
            stages.append(nn.Sequential(DownUnit(in_channels, channels), *(BasicUnit(channels) for _ in range(blocks))))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.conv2 = nn.Conv2d(in_channels, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(self.pool(x).flatten(1))


# net_size 1 of kuangliu's table: channels of the three stages and of the last 1x1 conv, basic units per stage
OUT_CHANNELS = (116, 232, 464, 1024)
NUM_BLOCKS = (3, 7, 3)


@register_model("shufflenetv2", "ShuffleNetV2 1x, CIFAR variant (kuangliu)")
def shufflenetv2(num_classes: int) -> nn.Module:
    return ShuffleNetV2(OUT_CHANNELS, NUM_BLOCKS, num_classes)
