"""Skeleton bytes of 4.0 containers, decoded and stored, and their ratio: what the reader's
skeleton ceiling at open (``SKELETON_FREE_BYTES`` + ``SKELETON_RATIO`` times the stored bytes,
``onnxdc/format/container.py``) must leave room for::

    python tools/skeleton_sizes.py [model.onnx ...]   (default: the sample models)
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

import onnxdc
from onnxdc.format.container import SKELETON_FREE_BYTES, SKELETON_RATIO, read_container

MODELS = Path(__file__).resolve().parent.parent / "models"


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or [MODELS / f"{n}.onnx" for n in ("lenet300", "lenet5", "crnn", "yolo")]
    print("| model | nodes | decoded | stored | ratio | ceiling | headroom |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        model = onnx.load(str(path))
        c = read_container(onnxdc.compress(model).data)
        s = c.header.streams[c.header.skeleton]
        ceiling = SKELETON_FREE_BYTES + SKELETON_RATIO * s.length
        print(f"| {path.stem} | {len(model.graph.node):,} | {s.count:,} | {s.length:,} | {s.count / s.length:.1f} "
              f"| {ceiling:,} | {ceiling / s.count:.0f}x |")


if __name__ == "__main__":
    main(sys.argv[1:])
