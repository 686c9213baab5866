"""A small registry of resamplers, so other resamplers plug in by name.

A resampler maps one view's patch features (batch, tokens, in_dim) to a fixed number of vectors
(batch, num_tokens, out_dim). Every registered class has a config dataclass `Config` (built with
`uti.config.from_dict`, so unknown keys are errors listing the valid ones) and the attributes `in_dim`,
`out_dim`, `num_tokens`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from torch import nn

from uti.config import from_dict

from .errors import ConnectorError, WidthMismatchError

__all__ = ["register_resampler", "build_resampler", "resampler_names", "resampler_class", "require_positive",
           "check_features"]

_REGISTRY: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def require_positive(config: Any, *names: str) -> None:
    """For a resampler `Config.__post_init__`: each named size field must be an integer >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_features(features: Any, in_dim: int) -> None:
    """For a resampler's `forward`: `features` must be (batch, tokens, in_dim); else a one-line error."""
    if features.dim() != 3 or features.shape[-1] != in_dim:
        raise WidthMismatchError(f"resampler expects features of shape (batch, tokens, {in_dim}), got "
                                 f"{tuple(features.shape)}; use a connector built for this vision tower's width")


def register_resampler(name: str) -> Callable[[M], M]:
    """Class decorator: register a resampler class (with a nested `Config` dataclass) under `name`."""

    def deco(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConnectorError(f"resampler name {name!r} is already registered by {_REGISTRY[name].__name__}")
        if not hasattr(cls, "Config"):
            raise ConnectorError(f"resampler {cls.__name__} needs a nested `Config` dataclass to be registered")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _load_builtins() -> None:
    """Import the built-in resampler modules: importing one registers it (its `@register` decorators run)."""
    for name in ("perceiver", "pooled", "spatial_pool", "c_abstractor", "masked_drop", "qformer", "bimamba"):
        importlib.import_module(f".{name}", __package__)


def resampler_names() -> list[str]:
    """Names of the registered resamplers, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def resampler_class(name: str) -> type[nn.Module]:
    """The class registered under `name`; an unknown name is a one-line error listing the known ones."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConnectorError(f"unknown resampler {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_resampler(name: str, **cfg: Any) -> nn.Module:
    """Build the resampler `name` from config keys (unknown keys raise `ConfigError` with the valid list)."""
    cls = resampler_class(name)
    config = from_dict(cls.Config, cfg, where=f"resampler {name!r}")
    return cls(config)
