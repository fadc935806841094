"""Coverage-guided fuzzing of the container reader and decoder with atheris (outside CI).

Any input may only raise ContainerError (or decode to a model); anything else is a bug. Besides
atheris' byte mutations, inputs that are valid containers are mutated by :mod:`mutate` (header
values and stream bytes changed, checksums fixed up), so mutations reach the decoders.

    pip install atheris
    python fuzz/fuzz_container.py -runs=200000 -seed=1 fuzz/corpus

A fixed number of runs from a fixed seed, so a run can be repeated. Seed the corpus with real
containers, e.g.
``onnxdc compress models/lenet300.onnx --sparsity 0.9 --bits 5 -o fuzz/corpus/lenet300.onnxdc``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

with atheris.instrument_imports():
    from onnxdc import ContainerError, decompress

import mutate  # noqa: E402


def test_one_input(data: bytes) -> None:
    try:
        decompress(data, max_output_bytes=1 << 28)
    except ContainerError:
        pass


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """A structure-aware mutant of a valid container; atheris' own byte mutation otherwise."""
    try:
        obj, chunks = mutate.unpack(data)
    except ContainerError:
        return atheris.Mutate(data, max_size)
    out = mutate.mutate(obj, chunks, np.random.default_rng(seed))
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
