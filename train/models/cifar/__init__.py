"""The CIFAR nets of the pytorch-classification tables, one family per module; importing registers them.

Import order is listing order (``list_models``): classic nets first, then the residual families, then the
mobile ones of kuangliu/pytorch-cifar.
"""
from train.models.cifar import (  # noqa: F401  # noqa: F401
    alexnet,
    densenet,
    mobilenet,
    mobilenetv2,
    pnasnet,
    preresnet,
    resnet,
    resnext,
    shufflenetv2,
    vgg,
    wrn,
)
