"""The ImageNet names of the reference studies, and the listing's complexity figures against torchvision's docs."""
import re

import pytest
import torchvision

from train.errors import UsageError
from train.models import ALIASES, UNAVAILABLE, complexity, parameter_count, resolve_model
from train.models.__main__ import main as list_main
from train.studies.figures import significant
from train.studies.published import read_reference

REFERENCE_NAMES = sorted({row["model"] for row in read_reference("imagenet_architectures")}
                         | {row["model"] for row in read_reference("imagenet_pretrained_ranking")})


def documented(name: str) -> dict:
    """torchvision's documented figures of the net's default weights: num_params, _ops (GMACs, named GFLOPS)."""
    return torchvision.models.get_model_weights(name).DEFAULT.meta


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_name_resolves_or_is_refused_with_its_reason(name):
    if name.lower() in UNAVAILABLE:
        with pytest.raises(UsageError, match=re.escape(UNAVAILABLE[name.lower()])):
            resolve_model(name, prefer="imagenet")
    else:
        entry = resolve_model(name, prefer="imagenet")
        assert entry.family == "imagenet"
        assert parameter_count(entry, 1000) > 0  # the net builds


def test_names_differing_in_more_than_case_map_to_their_library_nets():
    assert resolve_model("DualPathNet68", prefer="imagenet").qualified_name == "timm/dpn68"
    assert resolve_model("SE-ResNeXt50_32x4d", prefer="imagenet").qualified_name == "timm/legacy_seresnext50_32x4d"
    assert resolve_model("mobilenetV2", prefer="imagenet").qualified_name == "torchvision/mobilenet_v2"
    # a reference name that is also a CIFAR net's name still means the ImageNet net for ImageNet data
    assert resolve_model("VGG16", prefer="imagenet").qualified_name == "torchvision/vgg16"


def test_alias_and_unavailable_keys_are_lower_case_so_any_spelling_reaches_them():
    assert all(key == key.lower() for key in [*ALIASES, *UNAVAILABLE])


def test_no_unavailable_name_is_an_alias():
    assert not set(UNAVAILABLE) & set(ALIASES)


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "densenet121", "mobilenet_v2", "vgg16_bn", "squeezenet1_1",
                                  "googlenet", "inception_v3", "efficientnet_b0", "shufflenet_v2_x1_0",
                                  "regnet_x_400mf"])
def test_parameters_equal_torchvisions_documented_num_params(name):
    assert parameter_count(resolve_model(name, prefer="imagenet"), 1000) == documented(name)["num_params"]


def test_resnet50_flops_agree_with_torchvisions_documented_gflops():
    _, flops = complexity(resolve_model("resnet50", prefer="imagenet"), 1000)
    # torchvision's "GFLOPS" count a multiply-add once; torch's flop counter counts it as 2 FLOPs
    assert flops / 2e9 == pytest.approx(documented("resnet50")["_ops"], rel=0.01)


def test_native_input_size_is_the_published_evaluation_crop():
    assert resolve_model("inception_v3", prefer="imagenet").input_size == 299
    assert resolve_model("efficientnet_b3", prefer="imagenet").input_size == 300
    assert resolve_model("InceptionV4", prefer="imagenet").input_size == 299
    assert resolve_model("NASNet-A-Large", prefer="imagenet").input_size == 331


def test_listing_shows_source_input_params_and_flops(capsys):
    assert list_main(["resnet50", "--dataset", "imagenet"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("resnet50 "))
    name, source, size, params_m, gflops, gmacs = row[:6]
    assert (source, size) == ("torchvision", "224")
    assert params_m == significant(documented("resnet50")["num_params"] / 1e6)  # the listing's 3 digits: 25.6
    assert float(gmacs) == pytest.approx(documented("resnet50")["_ops"], rel=0.01)
    assert float(gflops) == pytest.approx(2 * float(gmacs), abs=0.002)


def test_listing_names_unavailable_reference_nets_with_the_reason(capsys):
    assert list_main(["shufflenet*", "--dataset", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "shufflenet_v2_x1_0" in out
    assert UNAVAILABLE["shufflenet"] in out
