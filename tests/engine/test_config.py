"""Config precedence (defaults < recipe < flags), recipe validity, one-line flag errors."""
import argparse

import pytest

from train.engine.builders import synthetic_like_the_arch
from train.engine.config import TrainConfig, config_from_args, get_args_parser, make_config
from train.engine.recipes import RECIPES
from train.errors import UsageError


def parse(*argv):
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    return config_from_args(parser.parse_args(list(argv)))


def test_defaults_when_nothing_is_given():
    cfg = parse()
    assert cfg == TrainConfig()


def test_recipe_fills_what_flags_leave_unset():
    cfg = parse("--recipe", "wrn-28-10", "--epochs", "3", "--milestones", "1", "2")
    assert cfg.epochs == 3 and cfg.milestones == (1, 2)  # flags win
    assert cfg.gamma == 0.2 and cfg.weight_decay == 5e-4 and cfg.dropout == 0.3  # recipe
    assert cfg.arch == "wrn-28-10" and cfg.data.dataset == "cifar10" and cfg.data.batch_size == 128
    assert cfg.momentum == 0.9 and cfg.precision == "fp32"  # defaults


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_valid_config(name):
    cfg = make_config(**RECIPES[name], recipe=name)
    assert cfg.schedule == "multistep" and cfg.lr == 0.1 and cfg.momentum == 0.9
    assert all(0 < m <= cfg.epochs for m in cfg.milestones)


def test_published_recipes():
    r = RECIPES
    assert (r["resnet-110"]["epochs"], r["resnet-110"]["milestones"], r["resnet-110"]["weight_decay"]) == (164, (81, 122), 1e-4)
    assert (r["wrn-28-10"]["epochs"], r["wrn-28-10"]["milestones"], r["wrn-28-10"]["gamma"]) == (200, (60, 120, 160), 0.2)
    assert (r["resnext-29"]["epochs"], r["resnext-29"]["milestones"], r["resnext-29"]["weight_decay"]) == (300, (150, 225), 5e-4)
    assert (r["densenet-bc"]["epochs"], r["densenet-bc"]["batch_size"], r["densenet-bc"]["weight_decay"]) == (300, 64, 1e-4)


def test_unknown_key_and_recipe_are_rejected():
    with pytest.raises(UsageError, match="unknown config key"):
        make_config(learning_rate=0.1)
    with pytest.raises(UsageError, match="unknown recipe"):
        parse("--recipe", "resnet-999")


def test_resume_keeps_saved_config_and_refuses_another_arch():
    saved = make_config(arch="resnet-32", epochs=7, lr=0.05).to_dict()
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    cfg = config_from_args(parser.parse_args(["--resume", "x", "--epochs", "9"]), saved=saved)
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.resume) == ("resnet-32", 9, 0.05, "x")
    with pytest.raises(UsageError, match="differs from the checkpoint"):
        config_from_args(parser.parse_args(["--arch", "resnet-20"]), saved=saved)


def test_milestones_outside_the_schedule_are_rejected():
    with pytest.raises(UsageError, match="milestones"):
        make_config(schedule="multistep", epochs=5, milestones=(3, 9))


@pytest.mark.parametrize("arch, flags, size, classes", [
    ("resnet-20", {}, 32, 10),  # a CIFAR net: CIFAR's images
    ("resnet50", {}, 224, 1000),  # an ImageNet net: its native crop
    ("inception_v3", {}, 299, 1000),
    ("alexnet", {}, 32, 10),  # in both families: the CIFAR net, as for any 32x32 data
    ("alexnet", {"image_size": 224}, 224, 1000),  # the ImageNet net at ImageNet's size
    ("resnet50", {"image_size": 64, "num_classes": 7}, 64, 7),  # given: kept
])
def test_synthetic_data_defaults_to_the_archs_own_input(arch, flags, size, classes):
    cfg = synthetic_like_the_arch(make_config(arch=arch, dataset="synthetic", **flags))
    assert (cfg.data.image_size, cfg.data.num_classes) == (size, classes)
    assert synthetic_like_the_arch(make_config(arch=arch)) == make_config(arch=arch)  # other data: untouched
