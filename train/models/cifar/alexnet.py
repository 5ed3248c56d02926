"""AlexNet for 32x32 inputs (Krizhevsky et al. 2012), after bearpaw/pytorch-classification models/cifar/alexnet.py.

The ImageNet feature stack squeezed to CIFAR: the stride-4 first conv and three 2x2 max-pools bring 32x32
down to 1x1, so the three-layer fully connected head shrinks to one Linear(256, num_classes). PyTorch's
default initialisation, as in bearpaw.
"""
from torch import nn

from train.models._registry import register_model


class AlexNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_model("alexnet", "AlexNet, CIFAR variant: 5 convs, one linear layer")
def alexnet(num_classes: int) -> nn.Module:
    return AlexNet(num_classes)
