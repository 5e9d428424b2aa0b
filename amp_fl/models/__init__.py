"""Model registry and the architectures AMP-FL trains (each imported when a model is first built)."""

from .registry import available_models, build_model, count_parameters, model_spec, register_model

__all__ = ["available_models", "build_model", "count_parameters", "model_spec", "register_model"]
