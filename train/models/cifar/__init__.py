"""The CIFAR nets of the pytorch-classification tables, one family per module; importing registers them.

Import order is listing order (``list_models``): classic nets first, then the residual families, then the
mobile ones of kuangliu/pytorch-cifar.
"""
from train.models.cifar import alexnet, vgg, resnet, preresnet, wrn, resnext, densenet  # noqa: F401
from train.models.cifar import mobilenet, mobilenetv2, shufflenetv2, pnasnet  # noqa: F401
