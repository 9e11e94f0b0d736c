"""The model zoo: `create(name, **kwargs)`, `list_models(pattern)`, `model_info(name)`."""

# Importing a family's module registers its models.
from cvjax.models import (  # noqa: F401
    airbench,
    alexnet,
    densenet,
    efficientnet,
    fractalnet,
    googlenet,
    inception_v3,
    inception_v4,
    lenet,
    mnasnet,
    mobilenet,
    nasnet,
    nb201,
    resnet,
    senet,
    shufflenet,
    vgg,
    xception,
)
from cvjax.models.features import feature_maps, forward_features, reset_classifier
from cvjax.models.registry import create, list_models, model_info, register

__all__ = [
    "create",
    "feature_maps",
    "forward_features",
    "list_models",
    "model_info",
    "register",
    "reset_classifier",
]
