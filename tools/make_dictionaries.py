"""Build the current built-in zstd dictionaries (``onnxdc/coders/dictionaries/*.zdict``); run once
per new dictionary, into a new name: a released dictionary never changes (containers depend on it).

The training set is the ONNX backend test models shipped inside the onnx package (some 150 graphs),
and the exported PyTorch models of ``tools/torch_corpus.py`` (33 generic architectures, counted
eight times: they stand for most graphs users bring; 8 rather than 4 cut the held-out exported GRU
seq2seq skeleton by a fifth, 769 -> 605 bytes), never onnxdc's sample models, which measure
the result. Each model is compressed losslessly and at two Deep Compression settings:

- ``onnx-2`` is trained on the 3.0 skeletons (the graphs without their stored tensors, derived
  value names marked: :mod:`onnxdc.onnx_io.names`);
- ``header-3`` on the 3.0 headers' compact JSON, written with ``onnx-2`` available (4.0 codes its
  metadata with it);
- ``onnx-3`` on the 4.0 skeletons: as ``onnx-2``'s, node names marked too.

    PYTHONPATH=. python tools/make_dictionaries.py [--check]      # needs torch (dev-only)

``--check`` rebuilds both in memory and compares them with the files (training is deterministic:
fixed COVER parameters, one thread). The 1.0/2.0 dictionaries ``onnx-1`` and ``header-2`` were built
by this script's version in git before format 3.0 (from the backend models alone) and stay frozen.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import onnx
import zstandard

import onnxdc
from onnxdc.coders import dictionaries, zstd_dict
from onnxdc.format.container import ContainerWriter
from onnxdc.onnx_io.names import predict_names
from onnxdc.pipeline import encode
from onnxdc.pipeline.encode import encode_model
from onnxdc.pipeline.settings import SharingConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_corpus import corpus  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "onnxdc" / "coders" / "dictionaries"
SIZES = {"onnx-2": 32768, "header-3": 4096, "onnx-3": 32768}
#: Times each exported PyTorch model counts in the training set.
TORCH_WEIGHT = 8
#: Largest sample trained on (bytes).
MAX_SAMPLE = 1 << 17
SETTINGS = [None, SharingConfig(sparsity=0.9, bits=5, min_elements=64),
            SharingConfig(sparsity=0.5, bits=4, min_elements=64)]


def corpus_models() -> list[tuple[str, onnx.ModelProto, int]]:
    """(name, model, weight) of every training model."""
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    paths = sorted(root.glob("*/*/model.onnx")) + sorted(root.glob("light/*.onnx"))
    return [(str(p), onnx.load(str(p)), 1) for p in paths] + [(n, m, TORCH_WEIGHT) for n, m in corpus()]


def samples(models: list[tuple[str, onnx.ModelProto, int]], major: int = 3) -> tuple[list[bytes], list[bytes]]:
    """The skeletons of format ``major`` (lossless runs, names marked; from 4.0 node names too) and
    the 3.0 compact headers (every run) of the training models, each ``weight`` times.

    Headers are built without laying out a container (which would need the header dictionary).
    """
    skeletons, headers = [], []
    for _, model, weight in models:
        for sharing in SETTINGS if major == 3 else SETTINGS[:1]:
            skeleton = onnx.ModelProto()
            skeleton.CopyFrom(model)
            writer = ContainerWriter(major=3)
            try:
                header, _, _ = encode_model(skeleton, writer=writer,
                                            config=onnxdc.CompressConfig(sharing=sharing), original=model)
            except onnxdc.OnnxdcError:
                continue
            if sharing is None:
                marked = predict_names(skeleton, nodes=major >= 4)
                skeletons += [(marked or skeleton).SerializeToString(deterministic=True)] * weight
            headers += [header.to_compact_json_bytes()] * weight
    return skeletons, headers


#: Dictionaries built by this run, used before (or, checking, instead of) their files.
_BUILT: dict[str, bytes] = {}


def _dictionary(name: str) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(_BUILT[name]) if name in _BUILT else dictionaries.dictionary(name)


def pin(name: str, data: bytes, *, write: bool) -> None:
    """Let this run use dictionary ``name`` = ``data`` before it is pinned in
    :data:`onnxdc.coders.dictionaries.DIGESTS` (written to its file unless checking)."""
    if write:
        (OUT / f"{name}.zdict").write_bytes(data)
    _BUILT[name] = data
    dictionaries.DIGESTS.setdefault(name, hashlib.sha256(data).hexdigest())
    zstd_dict.dictionary = _dictionary  # the coder's lookup, for this run only


def train(size: int, data: list[bytes]) -> bytes:
    data = [s for s in data if len(s) <= MAX_SAMPLE]  # a few large graphs would outweigh the rest
    d = zstandard.train_dictionary(size, data, k=200, d=8, level=19, threads=1, notifications=0)
    return d.as_bytes()


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_known_args(argv)[1]
    check = "--check" in args
    models = corpus_models()
    all_coders = encode.SKELETON_CODERS
    encode.SKELETON_CODERS = all_coders[:2]  # before onnx-2 exists, the skeleton is tried without it
    skeletons, _ = samples(models)
    encode.SKELETON_CODERS = all_coders
    built = {"onnx-2": train(SIZES["onnx-2"], skeletons)}
    pin("onnx-2", built["onnx-2"], write=not check)
    _, headers = samples(models)  # again: the skeleton dictionary changes what the headers say
    built["header-3"] = train(SIZES["header-3"], headers)
    skeletons4, _ = samples(models, major=4)  # 4.0: node names marked too
    built["onnx-3"] = train(SIZES["onnx-3"], skeletons4)
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
