"""The weight initialisation most pytorch-classification nets share (after bearpaw/pytorch-classification).

bearpaw copied it from fb.resnet.torch: every conv weight ~ N(0, 2 / (k * k * out_channels)), i.e. He et al.
2015 in fan-out mode. bearpaw also set BatchNorm to weight 1, bias 0 by hand because PyTorch 0.x drew BN
weights at random; today that is PyTorch's default, so it is not repeated here.
"""
from torch import nn


def he_fan_out_(model: nn.Module) -> None:
    """He-normal (fan-out) weights on every ``nn.Conv2d`` of ``model``, zero on their biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
