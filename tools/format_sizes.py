"""Header and skeleton bytes of the sample models written as format 3.0 and as 4.0, same settings
(the table in ``docs/format.md``; headers with their prefix)::

    python tools/format_sizes.py
"""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxdc.format.container import ContainerWriter, read_container
from onnxdc.pipeline.encode import CompressConfig, encode_model
from onnxdc.pipeline.settings import SharingConfig

MODELS = Path(__file__).resolve().parent.parent / "models"  # run from anywhere
CONFIG = CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5))


def sizes(model: onnx.ModelProto, major: int) -> tuple[int, int, int]:
    """Stored header bytes (prefix included), skeleton stream bytes and file bytes."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    writer = ContainerWriter(major=major)
    header, _, _ = encode_model(skeleton, writer=writer, config=CONFIG, original=model)
    data = writer.to_bytes(header)
    c = read_container(data)
    return c.header_size, c.header.streams[c.header.skeleton].length, len(data)


def main() -> None:
    print("| model | 3.0 header | 4.0 header | 3.0 skeleton | 4.0 skeleton | 3.0 file | 4.0 file |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("lenet300", "lenet5", "crnn", "yolo"):
        model = onnx.load(str(MODELS / f"{name}.onnx"))
        (h2, s2, f2), (h3, s3, f3) = sizes(model, 3), sizes(model, 4)
        print(f"| {name} | {h2:,} | {h3:,} | {s2:,} | {s3:,} | {f2:,} | {f3:,} |")


if __name__ == "__main__":
    main()
