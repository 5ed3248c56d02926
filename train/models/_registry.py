"""One name -> one constructor, for the CIFAR nets written here and every torchvision/timm ImageNet net.

Names a user types:
  * CIFAR nets of this repo: ``resnet-110``, ``wrn-28-10``, ``densenet-bc-100-12`` ... (family ``cifar``)
  * ImageNet nets: torchvision names (``resnet18``), then timm names torchvision lacks (``dpn68``),
    and the short aliases of ``ALIASES`` (``resnext50``) (family ``imagenet``)
  * a source prefix forces one library: ``cifar/alexnet``, ``torchvision/alexnet``, ``timm/resnet50``.

Some names exist in both families (``alexnet``, ``vgg16``): the data set decides, 32x32 data prefers
the CIFAR net, ImageNet-sized data the ImageNet one (``resolve_model(name, prefer=...)``).
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from train.errors import UsageError

FAMILIES = ("cifar", "imagenet")
SOURCES = ("cifar", "torchvision", "timm")

# Short names users type for ImageNet nets -> "source/name". One table, read by resolve_model.
ALIASES = {
    "resnext50": "torchvision/resnext50_32x4d",
    "resnext101": "torchvision/resnext101_32x8d",
    "resnext101_64": "torchvision/resnext101_64x4d",
    "wrn50": "torchvision/wide_resnet50_2",
    "wrn101": "torchvision/wide_resnet101_2",
    "mobilenetv2": "torchvision/mobilenet_v2",
    "mobilenetv3": "torchvision/mobilenet_v3_large",
    "mobilenet": "timm/mobilenetv1_100",
    "shufflenetv2": "torchvision/shufflenet_v2_x1_0",
    "inceptionv3": "torchvision/inception_v3",
    "inception_v4": "timm/inception_v4",
    "densenet-121": "torchvision/densenet121",
    "efficientnet": "torchvision/efficientnet_b0",
    # Names of the reference studies (train/reference/imagenet_architectures.csv, Bianco et al. 2018, and the
    # Keras/PyTorch ranking of imagenet_pretrained_ranking.csv) that differ from the libraries' names once
    # lower-cased. SE nets map to timm's legacy_* ports of the original (Caffe) SENet models, which Bianco et al.
    # measured through Cadene's pretrainedmodels; timm's own senet154/seresnet50 remain under timm/<name>.
    "inceptionv4": "timm/inception_v4",
    "inceptionresnetv2": "timm/inception_resnet_v2",
    "xception": "timm/legacy_xception",
    "nasnet-a-large": "timm/nasnetalarge",
    "nasnetlarge": "timm/nasnetalarge",
    "dualpathnet68": "timm/dpn68",
    "dualpathnet92": "timm/dpn92",
    "dualpathnet98": "timm/dpn98",
    "dualpathnet107": "timm/dpn107",
    "dualpathnet131": "timm/dpn131",
    "senet154": "timm/legacy_senet154",
    "se-resnet50": "timm/legacy_seresnet50",
    "se-resnet101": "timm/legacy_seresnet101",
    "se-resnet152": "timm/legacy_seresnet152",
    "se-resnext50_32x4d": "timm/legacy_seresnext50_32x4d",
    "se-resnext101_32x4d": "timm/legacy_seresnext101_32x4d",
}

_NO_NASNET_MOBILE = "NASNet-A-Mobile is in neither torchvision nor timm (timm has only NASNet-A-Large: nasnetalarge)"
# Names of the reference studies that no installed library implements, lower-cased, with the reason.
# They are refused with that reason, never mapped to a look-alike net.
UNAVAILABLE = {
    "bninception": "BN-Inception (Ioffe & Szegedy 2015) is in neither torchvision nor timm "
                   "(it came with Cadene's pretrainedmodels); googlenet is Inception-v1 without BatchNorm",
    "cafferesnet101": "the Caffe ResNet-101 (stride-2 in the first 1x1 conv, Cadene's pretrainedmodels) is in "
                      "neither torchvision nor timm; resnet101 is torchvision's ResNet-101 v1.5",
    "fbresnet152": "Facebook's Torch7 ResNet-152 port (Cadene's pretrainedmodels) is in neither torchvision nor "
                   "timm; resnet152 is torchvision's ResNet-152 v1.5",
    "nasnet-a-mobile": _NO_NASNET_MOBILE,
    "nasnetmobile": _NO_NASNET_MOBILE,
    "shufflenet": "ShuffleNet v1 (Zhang et al. 2018) is in neither torchvision nor timm; "
                  "shufflenet_v2_x1_0 (alias shufflenetv2) is ShuffleNet v2, a different net",
}


@dataclass(frozen=True)
class ModelEntry:
    """A constructible model: ``build(num_classes, **kwargs)`` returns an ``nn.Module``."""

    name: str
    source: str
    family: str
    build: Callable[..., nn.Module] = field(compare=False, repr=False)
    input_size: int = 224
    summary: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.source}/{self.name}"


_CIFAR: dict[str, ModelEntry] = {}


def register_model(name: str, summary: str = "") -> Callable:
    """Decorator for a CIFAR net builder ``fn(num_classes, **kwargs) -> nn.Module``.

    Usable on a function, or called directly in a loop: ``register_model(name)(functools.partial(...))``.
    """

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _CIFAR:
            raise ValueError(f"model {name!r} registered twice")
        _CIFAR[name] = ModelEntry(name, "cifar", "cifar", builder, input_size=32, summary=summary)
        return builder

    return add


@functools.cache
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


_EXPLICIT_INIT = frozenset({"googlenet", "inception_v3"})


def _torchvision_entry(name: str) -> ModelEntry:
    import torchvision

    def build(num_classes: int, **kwargs) -> nn.Module:
        if name in _EXPLICIT_INIT:
            kwargs.setdefault("init_weights", True)  # the paper's init; unset, torchvision warns on every build
        if name == "googlenet":  # the published net (torchvision's weights, 6.6 M) has no auxiliary classifiers
            kwargs.setdefault("aux_logits", False)
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)

    return ModelEntry(name, "torchvision", "imagenet", build, input_size=_torchvision_input_size(name),
                      summary="torchvision")


def _torchvision_input_size(name: str) -> int:
    """The smallest evaluation crop among the net's published weights: what a net built without weights takes
    (efficientnet_b7: 600; vit_h_14: 224, the size its 518-pixel SWAG weights are not built for)."""
    import torchvision

    return min(w.transforms().crop_size[0] for w in torchvision.models.get_model_weights(name))


def _timm_entry(name: str) -> ModelEntry:
    import timm

    def build(num_classes: int, dropout: float | None = None, **kwargs) -> nn.Module:
        if dropout is not None:
            kwargs["drop_rate"] = dropout
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    cfg = timm.get_pretrained_cfg(name)
    size = cfg.input_size[-1] if cfg is not None else 224
    return ModelEntry(name, "timm", "imagenet", build, input_size=size, summary="timm")


def _lookup(source: str, name: str) -> ModelEntry | None:
    if source == "cifar":
        return _CIFAR.get(name)
    if source == "torchvision" and name in _torchvision_names():
        return _torchvision_entry(name)
    if source == "timm" and name in _timm_names():
        return _timm_entry(name)
    return None


def _imagenet_lookup(name: str) -> ModelEntry | None:
    """torchvision first, timm where torchvision has no such net."""
    if name in ALIASES:
        return _lookup(*ALIASES[name].split("/", 1))
    return _lookup("torchvision", name) or _lookup("timm", name)


def resolve_model(name: str, prefer: str = "cifar") -> ModelEntry:
    """The entry a user-typed name means, for data that prefers the ``prefer`` family."""
    if prefer not in FAMILIES:
        raise ValueError(f"prefer must be one of {FAMILIES}, not {prefer!r}")
    # every library's names are lower case: 'ResNet50' and 'DenseNet121' of the reference tables resolve too
    entry = _find(name, prefer) or _find(name.lower(), prefer)
    if entry is None and name.lower() in UNAVAILABLE:
        raise UsageError(f"arch {name!r} is not available: {UNAVAILABLE[name.lower()]}")
    if entry is None:
        raise UsageError(f"unknown arch {name!r}{_suggestion(name)}; `cnnbench models` lists them all")
    return entry


def _find(name: str, prefer: str) -> ModelEntry | None:
    source, sep, bare = name.partition("/")
    if sep and source in SOURCES:
        return _lookup(source, bare)
    if prefer == "cifar":
        return _CIFAR.get(name) or _imagenet_lookup(name)
    return _imagenet_lookup(name) or _CIFAR.get(name)


def _suggestion(name: str) -> str:
    close = _close(name.lower())
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def _close(name: str) -> list[str]:
    known = list(dict.fromkeys([*_CIFAR, *ALIASES, *sorted(_torchvision_names()), *sorted(_timm_names())]))
    return difflib.get_close_matches(name, known, n=5, cutoff=0.6)


def create_model(name: str, num_classes: int, prefer: str = "cifar", **kwargs) -> nn.Module:
    """Build ``name`` for ``num_classes``; keyword arguments left ``None`` keep the model's default."""
    entry = resolve_model(name, prefer)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return entry.build(num_classes, **kwargs)
    except TypeError as err:
        raise UsageError(f"arch {entry.qualified_name} does not take {sorted(kwargs)}: {err}") from None


def list_models(pattern: str = "*", sources: tuple[str, ...] = SOURCES) -> list[ModelEntry]:
    """Entries whose name matches the shell-style ``pattern`` (case-insensitive, as names are), CIFAR nets first in
    the order they are registered, then each library's names in natural order (resnet18 before resnet101)."""
    entries: list[ModelEntry] = []
    if "cifar" in sources:
        entries += [_CIFAR[n] for n in _CIFAR if name_matches(n, pattern)]
    if "torchvision" in sources:
        entries += [_torchvision_entry(n) for n in _natural_order(_torchvision_names()) if name_matches(n, pattern)]
    if "timm" in sources:
        shadowed = _torchvision_names() if "torchvision" in sources else frozenset()
        entries += [_timm_entry(n) for n in _natural_order(_timm_names() - shadowed) if name_matches(n, pattern)]
    return entries


def name_matches(name: str, pattern: str) -> bool:
    """``name`` matches the shell-style ``pattern``, case ignored: 'RESNET-20' finds resnet-20, as --arch does."""
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def close_names(pattern: str) -> list[str]:
    """Known names close to ``pattern`` (its wildcards left out), for a listing that matched nothing."""
    return _close(pattern.lower().strip("*?[]"))


def _natural_order(names) -> list[str]:
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(entry: ModelEntry, num_classes: int) -> int:
    """Parameters of ``entry``, without allocating them where the net can be built on the meta device."""
    return count_parameters(_build_unallocated(entry, num_classes))


def forward_flops_per_image(model: nn.Module, image_size: int) -> int:
    """Forward FLOPs of one image, counted by torch's flop counter in eval mode (BN stats untouched)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


def complexity(entry: ModelEntry, num_classes: int) -> tuple[int, int]:
    """Parameters and forward FLOPs of one image at the net's native input size (``entry.input_size``)."""
    model = _build_unallocated(entry, num_classes)
    return count_parameters(model), forward_flops_per_image(_without_batch_norm(model), entry.input_size)


def _without_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm layers made identities, for counting only: torch's flop counter counts no FLOPs
    for batch norm, yet decomposes it into elementwise ops at every call, ~80 % of the counting time of a deep net
    (resnet-1202: 4.9 s against 1.0 s, the same count; tests/models/test_listing.py holds the counts equal)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            _without_batch_norm(child)
    return model


def _build_unallocated(entry: ModelEntry, num_classes: int) -> nn.Module:
    """The net on the meta device: shapes without memory or initialisation. A constructor that computes with
    tensor values (torchvision's regnets) cannot run there, so that net is built on the CPU."""
    try:
        with torch.device("meta"):
            return entry.build(num_classes)
    except NotImplementedError:
        return entry.build(num_classes)
