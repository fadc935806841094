"""Coverage-guided fuzzing of the container reader and decoder with atheris (outside CI).

Any input may only raise ContainerError (or decode to a model); anything else is a bug.

    pip install atheris
    python fuzz/fuzz_container.py -max_total_time=600 fuzz/corpus

Seed the corpus with real containers, e.g.
``onnxdc compress models/lenet300.onnx --sparsity 0.9 --bits 5 -o fuzz/corpus/lenet300.onnxdc``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from onnxdc import ContainerError, decompress


def test_one_input(data: bytes) -> None:
    try:
        decompress(data)
    except ContainerError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
