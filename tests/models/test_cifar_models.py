"""The CIFAR model zoo: parameter counts against the published tables, one training step for every net."""
import pytest
import torch
from torch import nn

from train.errors import UsageError
from train.models import count_parameters, create_model, list_models, parameter_count, resolve_model

# Millions of parameters for CIFAR-10, as the bearpaw/pytorch-classification README tables print them
# (rounded to 0.01 M). Its "ResNet-110" and "PreResNet-110" rows (1.70 M) are bottleneck nets of 164
# layers, see the docstring of train.models.cifar.resnet, hence the 164 keys here.
PUBLISHED_M = {
    "alexnet": 2.47,
    "vgg19_bn": 20.04,
    "resnet-164": 1.70,
    "preresnet-164": 1.70,
    "wrn-28-10": 36.48,
    "resnext-29-8x64d": 34.43,
    "resnext-29-16x64d": 68.16,
    "densenet-bc-100-12": 0.77,
    "densenet-bc-190-40": 25.62,
}

# kuangliu/pytorch-cifar publishes no counts. These are sum(p.numel() for p in net.parameters()) of its own
# classes, MobileNet(), MobileNetV2(), ShuffleNetV2(net_size=1) and PNASNetB(), rebuilt from its
# models/*.py and counted once; our nets also have the same list of parameter shapes.
KUANGLIU = {
    "mobilenet": 3_217_226,
    "mobilenetv2": 2_296_922,
    "shufflenetv2": 1_263_854,
    "pnasnet": 451_626,
}

# Over 3 s for one training step on a 2-core CPU
SLOW = {"resnet-1202"}
CIFAR_NETS = [
    pytest.param(e.name, marks=pytest.mark.slow) if e.name in SLOW else e.name
    for e in list_models(sources=("cifar",))
]


def count(name: str, num_classes: int = 10) -> int:
    return parameter_count(resolve_model(name), num_classes)


@pytest.mark.parametrize("name, millions", PUBLISHED_M.items())
def test_parameter_count_matches_published_table(name, millions):
    assert round(count(name) / 1e6, 2) == millions


@pytest.mark.parametrize("name, params", KUANGLIU.items())
def test_parameter_count_matches_kuangliu(name, params):
    assert count(name) == params


def test_basic_resnet_110_is_not_the_table_row():
    # He et al. 2016 Table 6 gives 1.7 M for ResNet-110; exactly, with 1x1 conv + BN projections, 1,730,714
    assert count("resnet-110") == 1_730_714
    assert round(count("resnet-110") / 1e6, 2) == 1.73
    assert count("resnet-110") != count("resnet-164")
    assert round(count("preresnet-110") / 1e6, 2) == 1.73


def test_cifar100_head_only_widens_the_classifier():
    # 90 more outputs, each with 64 weights (one per pooled feature) and a bias
    assert count("resnet-20", 100) - count("resnet-20", 10) == 64 * 90 + 90


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_training_step(name):
    torch.manual_seed(0)
    model = create_model(name, 10)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    # the meta-device count the registry reports is the real one
    assert count_parameters(model) == parameter_count(resolve_model(name), 10)


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "resnet-20", "densenet-bc-100-12", "shufflenetv2"])
def test_global_pooling_accepts_larger_inputs(name):
    model = create_model(name, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_wrn_dropout_between_convs():
    with torch.device("meta"):
        model = create_model("wrn-28-10", 10, dropout=0.3)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 12  # one per block: 3 stages of (28 - 4) / 6 blocks
    assert all(m.p == 0.3 for m in dropouts)


def test_wrn_without_dropout_has_none():
    with torch.device("meta"):
        model = create_model("wrn-28-10", 10, dropout=None)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_dropout_refused_by_nets_without_it():
    with pytest.raises(UsageError):
        create_model("resnet-20", 10, dropout=0.3)
