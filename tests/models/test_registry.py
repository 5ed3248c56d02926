"""The registry: ImageNet names through torchvision/timm, aliases, family preference, listing, bad names."""
import pytest
import torch

from train.errors import UsageError
from train.models import ALIASES, create_model, list_models, parameter_count, resolve_model
from train.studies.published import read_reference


@pytest.mark.parametrize("row", read_reference("imagenet_published"), ids=lambda r: r["model"])
def test_imagenet_parameter_counts_match_published(row):
    entry = resolve_model(row["arch"], prefer="imagenet")
    assert round(parameter_count(entry, 1000) / 1e6, 2) == float(row["params_m"])


def test_meta_count_equals_a_real_build():
    model = create_model("resnet18", 1000, prefer="imagenet")
    assert sum(p.numel() for p in model.parameters()) == parameter_count(resolve_model("resnet18", "imagenet"), 1000)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_resolves(alias):
    entry = resolve_model(alias, prefer="imagenet")
    assert entry.qualified_name == ALIASES[alias]


def test_short_names_users_type():
    assert resolve_model("resnext50", "imagenet").name == "resnext50_32x4d"
    assert resolve_model("wrn50", "imagenet").name == "wide_resnet50_2"


def test_torchvision_first_then_timm():
    assert resolve_model("resnet50", "imagenet").source == "torchvision"
    assert resolve_model("dpn68", "imagenet").source == "timm"
    assert resolve_model("timm/resnet50", "cifar").source == "timm"


def test_data_set_family_decides_shared_names():
    assert resolve_model("alexnet", prefer="cifar").source == "cifar"
    assert resolve_model("alexnet", prefer="imagenet").source == "torchvision"
    assert resolve_model("torchvision/alexnet", prefer="cifar").source == "torchvision"
    # a name only one family has resolves from either side
    assert resolve_model("resnet18", prefer="cifar").source == "torchvision"
    assert resolve_model("resnet-110", prefer="imagenet").source == "cifar"


def test_unknown_arch_suggests_close_names():
    with pytest.raises(UsageError, match=r"unknown arch 'resnet-111'.*did you mean: .*resnet-110"):
        resolve_model("resnet-111")


def test_suggestions_name_each_net_once_and_point_to_the_listing():
    with pytest.raises(UsageError) as refused:
        resolve_model("resnet20")  # resnet50 is a torchvision and a timm name
    names = str(refused.value).split("did you mean: ")[1].split("?")[0].split(", ")
    assert len(names) == len(set(names)) == 5 and "resnet-20" in names
    assert str(refused.value).endswith("`cnnbench models` lists them all")


def test_imagenet_net_builds_with_the_data_sets_classes():
    model = create_model("resnet18", 10, prefer="imagenet")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_listing_has_every_cifar_net_before_imagenet_ones():
    entries = list_models(sources=("cifar", "torchvision"))
    names = [e.name for e in entries]
    assert names.index("resnet-110") < names.index("resnet18")
    qualified = [e.qualified_name for e in entries]
    assert len(qualified) == len(set(qualified))
    assert {"cifar/alexnet", "torchvision/alexnet"} <= set(qualified)
