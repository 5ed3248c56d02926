"""VGG for 32x32 inputs (Simonyan & Zisserman 2015), after bearpaw/pytorch-classification models/cifar/vgg.py.

Five 2x2 max-pools take 32x32 to 1x1, so the classifier is a single Linear(512, num_classes) instead of
the ImageNet three-layer head. Initialisation as in bearpaw: He fan-out on convs, N(0, 0.01) on the linear.
"""
import functools

from torch import nn

from train.models._registry import register_model
from train.models.cifar._init import he_fan_out_


def make_features(cfg: list, batch_norm: bool) -> nn.Sequential:
    """3x3 convs (padding 1) of the widths in ``cfg``, a 2x2 max-pool at each ``"M"``."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, cfg: list, batch_norm: bool, num_classes: int) -> None:
        super().__init__()
        self.features = make_features(cfg, batch_norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        he_fan_out_(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


# The configurations of the paper's Table 1 (letters A, B, D, E); "M" is a max-pool.
CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg(num_classes: int, *, depth: int, batch_norm: bool) -> nn.Module:
    return VGG(CFGS[depth], batch_norm, num_classes)


for _depth in CFGS:
    register_model(f"vgg{_depth}", f"VGG-{_depth}")(functools.partial(vgg, depth=_depth, batch_norm=False))
    register_model(f"vgg{_depth}_bn", f"VGG-{_depth} with BatchNorm")(
        functools.partial(vgg, depth=_depth, batch_norm=True)
    )
