"""Command-line coder specs (``huffman``, ``zstd:19``, ``huffman+zstd``) to coders; each coder
announces the parameter a ``:N`` suffix sets (:attr:`Coder.main_param`)."""

from __future__ import annotations

from typing import Any

from onnxdc.coders.base import Coder
from onnxdc.coders.chain import ChainCoder
from onnxdc.coders.registry import get_coder, registered_coders
from onnxdc.errors import ConfigError


def coder_from_spec(spec: str) -> Coder:
    """Parse a command-line coder spec such as ``huffman``, ``zstd:19`` or ``huffman+zstd``.

    ``a+b`` is a chain: ``a`` codes the symbols, ``b`` codes ``a``'s output bytes. A ``:N`` suffix
    sets the coder's main integer parameter (``level`` for zstd, ``bits`` for raw,
    ``max_bits`` for huffman).
    """
    parts = [p.strip() for p in spec.split("+")]
    if not spec or any(not p for p in parts):
        raise ConfigError(f"invalid coder spec {spec!r}: expected names joined by '+'")
    coders = [_single_from_spec(p) for p in parts]
    return coders[0] if len(coders) == 1 else ChainCoder(coders=[c.get_config() for c in coders])


def _single_from_spec(part: str) -> Coder:
    name, _, arg = part.partition(":")
    config: dict[str, Any] = {"id": name}
    if arg:
        cls = registered_coders().get(name)
        param = cls.main_param if cls is not None else None
        if param is None:
            raise ConfigError(f"coder {name!r} takes no ':' parameter (in {part!r})")
        try:
            config[param] = int(arg)
        except ValueError:
            raise ConfigError(f"coder parameter must be an integer, got {arg!r} in {part!r}") from None
    return get_coder(config)
