"""PNASNet-B for CIFAR (Liu et al. 2018, "Progressive Neural Architecture Search"),
after kuangliu/pytorch-cifar models/pnasnet.py (PNASNetB).

kuangliu's small hand-written net with the searched cell of type B: three stacks of 6 cells (32, 64, 128
channels) with a stride-2 cell between stacks. Its "separable" conv is a single grouped conv (groups =
input channels, no pointwise part) + BN, kept as is since the parameter count follows it. PyTorch's default
initialisation, as kuangliu.
"""
import torch
import torch.nn.functional as F
from torch import nn

from train.models._registry import register_model


class SepConv(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding=(kernel_size - 1) // 2,
                              groups=in_planes, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class CellB(nn.Module):
    """relu(sep7x7 + sep3x3) and relu(maxpool3x3 + sep5x5), concatenated, then 1x1 conv + BN + ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.sep_conv1 = SepConv(in_planes, out_planes, kernel_size=7, stride=stride)
        self.sep_conv2 = SepConv(in_planes, out_planes, kernel_size=3, stride=stride)
        self.sep_conv3 = SepConv(in_planes, out_planes, kernel_size=5, stride=stride)
        # the pooled branch needs out_planes channels to be summed where the cell widens (stride 2 only)
        self.pool_proj = None
        if stride == 2:
            self.pool_proj = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        self.conv2 = nn.Conv2d(2 * out_planes, out_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(x, kernel_size=3, stride=self.stride, padding=1)
        if self.pool_proj is not None:
            pooled = self.pool_proj(pooled)
        left = F.relu(self.sep_conv1(x) + self.sep_conv2(x))
        right = F.relu(pooled + self.sep_conv3(x))
        return F.relu(self.bn2(self.conv2(torch.cat([left, right], 1))))


class PNASNet(nn.Module):
    def __init__(self, num_cells: int, num_planes: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, num_planes, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_planes)
        self.layer1 = nn.Sequential(*(CellB(num_planes, num_planes) for _ in range(num_cells)))
        self.layer2 = CellB(num_planes, 2 * num_planes, stride=2)
        self.layer3 = nn.Sequential(*(CellB(2 * num_planes, 2 * num_planes) for _ in range(num_cells)))
        self.layer4 = CellB(2 * num_planes, 4 * num_planes, stride=2)
        self.layer5 = nn.Sequential(*(CellB(4 * num_planes, 4 * num_planes) for _ in range(num_cells)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(4 * num_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.linear(self.pool(x).flatten(1))


@register_model("pnasnet", "PNASNet-B, CIFAR variant (kuangliu)")
def pnasnet(num_classes: int) -> nn.Module:
    return PNASNet(num_cells=6, num_planes=32, num_classes=num_classes)
