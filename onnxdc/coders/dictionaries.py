"""Built-in zstd dictionaries, by name: the vocabulary small streams share (ONNX graphs, headers).

A dictionary primes zstd with the strings and the entropy tables a kind of stream usually holds,
which is what a stream of a few hundred bytes cannot pay for itself (a 3 KB ONNX skeleton codes 15%
smaller with one, a 2.0 header half the size). Containers name the dictionary they were coded
with, so each file here is part of the format and never changes once released: its SHA-256 is
pinned below and checked when it is loaded. A new dictionary gets a new name. The files are built
by ``tools/make_dictionaries.py`` from the ONNX backend test models shipped with onnx (and, from
``onnx-2`` and ``header-3`` on, exported PyTorch models of generic architectures), not from
onnxdc's own sample models (those measure the result).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

import zstandard

from onnxdc.errors import ConfigError

#: Name -> SHA-256 of the dictionary file ``dictionaries/<name>.zdict``.
DIGESTS: dict[str, str] = {
    "onnx-1": "8474520a0894faa980eed11f7bad52937c912daca0b999c6474119f90ae4cf58",
    "header-2": "4fe3caaa900df3351050aeaddc51837b6140e04fe2ea80fac4609e249465ef45",
    "onnx-2": "73036b1af9e06c39fbca7c14d46f41817c7e5d3044d85ddeb1b32102ebe8aaaf",
    "header-3": "e72973f75ae260185927c39ebb18b46759a29b586907c05b0d1a56d8aa6abc59",
    "onnx-3": "6aa339594604d6e50abae79c5084bb32256899999c6f61dfdff55fae1f3b428f",
}


def dictionary_names() -> list[str]:
    """The names of the built-in dictionaries."""
    return sorted(DIGESTS)


@functools.cache
def dictionary(name: str) -> zstandard.ZstdCompressionDict:
    """The built-in dictionary ``name``, checked against its pinned digest.

    Raises:
        ConfigError: no dictionary has that name, or its file is missing or altered (a broken install).
    """
    if name not in DIGESTS:
        raise ConfigError(f"unknown zstd dictionary {name!r}; known: {', '.join(dictionary_names())}")
    try:
        data = resources.files("onnxdc.coders").joinpath("dictionaries", f"{name}.zdict").read_bytes()
    except OSError as exc:
        raise ConfigError(f"zstd dictionary {name!r} cannot be read ({exc})") from None
    if hashlib.sha256(data).hexdigest() != DIGESTS[name]:
        raise ConfigError(f"zstd dictionary {name!r} does not match its pinned digest (broken install)")
    return zstandard.ZstdCompressionDict(data)
