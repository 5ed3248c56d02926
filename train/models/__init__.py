"""Model registry: ``create_model(name, num_classes, prefer=...)``, ``list_models``, ``resolve_model``."""
from train.models import cifar  # noqa: F401  (registers the CIFAR nets)
from train.models._registry import (
    ALIASES,
    UNAVAILABLE,
    ModelEntry,
    close_names,
    complexity,
    count_parameters,
    create_model,
    forward_flops_per_image,
    list_models,
    name_matches,
    parameter_count,
    register_model,
    resolve_model,
)

__all__ = [
    "ALIASES",
    "UNAVAILABLE",
    "ModelEntry",
    "close_names",
    "complexity",
    "count_parameters",
    "create_model",
    "forward_flops_per_image",
    "list_models",
    "name_matches",
    "parameter_count",
    "register_model",
    "resolve_model",
]
