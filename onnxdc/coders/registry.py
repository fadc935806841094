"""The coder registry: a dict from ``coder_id`` to class, as in numcodecs.

``get_coder(config)`` is the only way the container turns a recorded config back into a coder, so
an unknown id or a bad parameter is reported here, once, with a typed error.
"""

from __future__ import annotations

from typing import Any

from onnxdc.coders.base import Coder
from onnxdc.errors import ConfigError, UnknownCoderError

_REGISTRY: dict[str, type[Coder]] = {}


def register_coder(cls: type[Coder]) -> type[Coder]:
    """Register ``cls`` under its ``coder_id`` (usable as a class decorator)."""
    _REGISTRY[cls.coder_id] = cls
    return cls


def registered_coders() -> dict[str, type[Coder]]:
    """Return a copy of the registry, id to class, in registration order."""
    return dict(_REGISTRY)


def get_coder(config: dict[str, Any]) -> Coder:
    """Build the coder a config describes.

    Raises:
        UnknownCoderError: the id names no registered coder.
        ConfigError: the config is not a dict with a string id, or its parameters are invalid.
    """
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise ConfigError(f"coder config must be an object with a string 'id', got {config!r}")
    cls = _REGISTRY.get(config["id"])
    if cls is None:
        raise UnknownCoderError(
            f"unknown coder {config['id']!r}; known coders: {', '.join(sorted(_REGISTRY))}",
            coder_id=config["id"],
        )
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, (ConfigError, UnknownCoderError)):
            raise
        raise ConfigError(f"invalid config for coder {config['id']!r}: {exc}") from None
