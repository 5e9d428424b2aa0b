"""Model registry and the architectures AMP-FL trains."""

from . import cnn, resnet, vgg  # noqa: F401  (registration side effects)
from .registry import available_models, build_model, count_parameters, model_spec, register_model

__all__ = ["available_models", "build_model", "count_parameters", "model_spec", "register_model"]
