"""The model zoo: `create(name, **kwargs)`, `list_models(pattern)`, `model_info(name)`."""

from cvjax.models import resnet  # noqa: F401  (registers the family)
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
