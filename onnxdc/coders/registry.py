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
            f"unknown coder {config['id']!r}; known coders: {', '.join(sorted(_REGISTRY))}"
        )
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, (ConfigError, UnknownCoderError)):
            raise
        raise ConfigError(f"invalid config for coder {config['id']!r}: {exc}") from None


def coder_from_spec(spec: str) -> Coder:
    """Parse a command-line coder spec such as ``huffman``, ``zstd:19`` or ``huffman+zstd``.

    ``a+b`` is a chain: ``a`` codes the symbols, ``b`` codes ``a``'s output bytes. A ``:N`` suffix
    sets the coder's main integer parameter (``level`` for zstd, ``bits`` for raw,
    ``max_bits`` for huffman).
    """
    from onnxdc.coders.chain import ChainCoder  # late import: chain depends on the registry

    parts = [p.strip() for p in spec.split("+")]
    if not spec or any(not p for p in parts):
        raise ConfigError(f"invalid coder spec {spec!r}: expected names joined by '+'")
    coders = [_single_from_spec(p) for p in parts]
    return coders[0] if len(coders) == 1 else ChainCoder(coders=[c.get_config() for c in coders])


_MAIN_PARAM = {"zstd": "level", "raw": "bits", "huffman": "max_bits"}


def _single_from_spec(part: str) -> Coder:
    name, _, arg = part.partition(":")
    config: dict[str, Any] = {"id": name}
    if arg:
        if name not in _MAIN_PARAM:
            raise ConfigError(f"coder {name!r} takes no ':' parameter (in {part!r})")
        try:
            config[_MAIN_PARAM[name]] = int(arg)
        except ValueError:
            raise ConfigError(f"coder parameter must be an integer, got {arg!r} in {part!r}") from None
    return get_coder(config)
