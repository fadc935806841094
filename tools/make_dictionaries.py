"""Build the built-in zstd dictionaries (``onnxdc/coders/dictionaries/*.zdict``); run once per new
dictionary, into a new name: a released dictionary never changes (containers depend on it).

The training set is the ONNX backend test models shipped inside the onnx package (some 150 graphs
exported by PyTorch and others, with and without weights), never onnxdc's sample models, which
measure the result. Each model is compressed losslessly and at two Deep Compression settings:

- ``onnx-1`` is trained on the skeletons (the graphs without their stored tensors);
- ``header-2`` on the 2.0 headers' compact JSON, written with ``onnx-1`` available.

    PYTHONPATH=. python tools/make_dictionaries.py [--check]

``--check`` rebuilds both in memory and compares them with the files (training is deterministic:
fixed COVER parameters, one thread).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import onnx
import zstandard

import onnxdc
from onnxdc.coders import dictionaries
from onnxdc.format.container import ContainerWriter
from onnxdc.pipeline import encode
from onnxdc.pipeline.encode import encode_model
from onnxdc.pipeline.settings import SharingConfig

OUT = Path(__file__).resolve().parent.parent / "onnxdc" / "coders" / "dictionaries"
SIZES = {"onnx-1": 16384, "header-2": 4096}
#: Largest sample trained on (bytes).
MAX_SAMPLE = 1 << 17
SETTINGS = [None, SharingConfig(sparsity=0.9, bits=5, min_elements=64),
            SharingConfig(sparsity=0.5, bits=4, min_elements=64)]


def corpus_models() -> list[Path]:
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    return sorted(root.glob("*/*/model.onnx")) + sorted(root.glob("light/*.onnx"))


def samples() -> tuple[list[bytes], list[bytes]]:
    """The skeletons (lossless runs) and compact headers (every run) of the training models.

    Headers are built without laying out a container (which would need the header dictionary).
    """
    skeletons, headers = [], []
    for path in corpus_models():
        model = onnx.load(str(path))
        for sharing in SETTINGS:
            skeleton = onnx.ModelProto()
            skeleton.CopyFrom(model)
            try:
                header, _ = encode_model(skeleton, writer=ContainerWriter(),
                                         config=onnxdc.CompressConfig(sharing=sharing), original=model)
            except onnxdc.OnnxdcError:
                continue
            if sharing is None:
                skeletons.append(skeleton.SerializeToString(deterministic=True))
            headers.append(header.to_compact_json_bytes())
    return skeletons, headers


def pin(name: str, data: bytes) -> None:
    """Let this run use dictionary ``name`` = ``data`` (written to its file) before it is pinned in
    :data:`onnxdc.coders.dictionaries.DIGESTS`."""
    dictionaries.DIGESTS[name] = hashlib.sha256(data).hexdigest()
    dictionaries.dictionary.cache_clear()


def train(size: int, data: list[bytes]) -> bytes:
    data = [s for s in data if len(s) <= MAX_SAMPLE]  # a few large graphs would outweigh the rest
    d = zstandard.train_dictionary(size, data, k=200, d=8, level=19, threads=1, notifications=0)
    return d.as_bytes()


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_known_args(argv)[1]
    check = "--check" in args
    all_coders = encode.SKELETON_CODERS
    encode.SKELETON_CODERS = all_coders[:1]  # before onnx-1 exists, the skeleton is tried with zstd only
    skeletons, _ = samples()
    encode.SKELETON_CODERS = all_coders
    built = {"onnx-1": train(SIZES["onnx-1"], skeletons)}
    if not check:
        (OUT / "onnx-1.zdict").write_bytes(built["onnx-1"])
        pin("onnx-1", built["onnx-1"])
    _, headers = samples()  # again: the skeleton dictionary changes what the headers say
    built["header-2"] = train(SIZES["header-2"], headers)
    for name, data in built.items():
        path = OUT / f"{name}.zdict"
        if check:
            same = path.exists() and path.read_bytes() == data
            print(f"{name}: {'same' if same else 'DIFFERENT'}")
        else:
            path.write_bytes(data)
        print(f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
