"""Throughput and peak memory of onnxdc on a large synthetic model, next to zstd and onnxruntime int8.

The sample models are tiny (well under 1 MB), so they say nothing about how onnxdc scales: how
many MB of weights it codes per second, how much memory a compression or a decompression needs,
and how both compare with what people use instead (``zstd`` on the file, onnxruntime's dynamic int8
quantization). This script builds a synthetic model of ``--params`` float32 weights — a Conv stack
followed by a stack of Gemm/MatMul layers, roughly Laplacian weights (scale 0.02, seeded), biases —
checks it with ``onnx.checker`` and onnxruntime, then runs every operation in a fresh subprocess so
that the peak RSS reported (``ru_maxrss`` of that child, read by a small runner process that
started it) belongs to that operation alone:

- ``onnxdc compress --sparsity 0.9 --bits 5`` (magnitude pruning, no calibration) and its
  ``onnxdc decompress --no-check``;
- ``onnxdc compress --lossless`` and its decompress (checked bit-exact afterwards);
- ``zstd -19`` and ``zstd -3`` of the model file(s), single-threaded (python ``zstandard``,
  streamed), and their decompression (checked byte-exact);
- ``onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)``.

Times are wall seconds of the whole child, interpreter start and imports included (the
``python startup`` row shows that fixed cost), the fastest of ``--repeat`` runs (default 3; the
JSON keeps every run). MB/s is float32 weight bytes (every initializer)
per second; ratio is float32 weight bytes / output bytes. Above ``--external-above`` parameters the
model is written with external data (all tensors in one ``.data`` file, as
``onnx.save_model(save_as_external_data=True, all_tensors_to_one_file=True)`` lays it out), streamed
layer by layer so that generation never holds the weights in memory; protobuf caps a file at 2 GB.

    python benchmarks/throughput.py [--params 25000000] [--jobs N] [--repeat 3] [--json out.json] [--profile]

``--jobs`` is passed to ``onnxdc compress -j`` (default: the CLI's default, the number of cores);
zstd runs single-threaded. ``--profile`` also runs the fixed-settings and lossless compressions once
in-process under cProfile (``jobs=1``, since cProfile sees only the main thread) and prints the top
functions by total time.
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import hashlib
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxdc

ONNXDC = "import sys; from onnxdc.cli import main; sys.argv[0] = 'onnxdc'; main()"
ZSTD_COMPRESS = """
import sys, zstandard
level, out, *inputs = sys.argv[1:]
cctx = zstandard.ZstdCompressor(level=int(level), threads=0)
for i, path in enumerate(inputs):
    with open(path, 'rb') as fin, open(f'{out}.{i}', 'wb') as fout:
        cctx.copy_stream(fin, fout)
"""
ZSTD_DECOMPRESS = """
import sys, zstandard
out, *inputs = sys.argv[1:]
dctx = zstandard.ZstdDecompressor()
for i, path in enumerate(inputs):
    with open(path, 'rb') as fin, open(f'{out}.{i}', 'wb') as fout:
        dctx.copy_stream(fin, fout)
"""
# The runner waits in waitpid with a kill timer: subprocess.run(timeout=...) polls the child with
# sleeps of up to 50 ms, which added 0-50 ms to every time measured.
RUNNER = """
import json, resource, subprocess, sys, threading, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
expired = []
timer = threading.Timer(float(sys.argv[1]), lambda: (expired.append(1), proc.kill()))
timer.start()
rc = proc.wait()
seconds = time.perf_counter() - t
timer.cancel()
print(json.dumps({'seconds': seconds, 'returncode': 'timeout' if expired else rc,
                  'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""
ORT_QUANTIZE = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
src, dst, external = sys.argv[1:]
quantize_dynamic(src, dst, weight_type=QuantType.QInt8, use_external_data_format=external == '1')
"""
ORT_RUN = """
import sys
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
print(sess.run(None, {'x': x})[0].shape)
"""


@dataclass(frozen=True)
class Layout:
    """Shapes of the synthetic model: a Conv stack (channels x n_conv) then Gemm/MatMul layers."""

    channels: int
    n_conv: int
    width: int
    n_hidden: int
    d_out: int

    def params(self) -> int:
        c, d = self.channels, self.width
        return ((27 * c + c) + self.n_conv * (9 * c * c + c) + (c * d + d) + self.n_hidden * (d * d + d)
                + (d * self.d_out + self.d_out))


def plan(params: int) -> Layout:
    """Pick layer shapes whose parameter count is close to ``params`` (about 20% in convolutions)."""
    width = int(np.clip(2 ** round(math.log2(math.sqrt(max(params, 1) / 6))), 256, 4096))
    channels = int(np.clip(width // 8, 32, 512))
    n_conv = max(1, round(0.2 * params / (9 * channels * channels + channels)))
    base = Layout(channels, n_conv, width, 0, 0).params()
    rest = max(0, params - base)
    n_hidden = rest // (width * width + width)
    d_out = max(16, (rest - n_hidden * (width * width + width)) // (width + 1))
    return Layout(channels, n_conv, width, n_hidden, d_out)


class TensorSink:
    """Turns arrays into initializers: inline ``raw_data``, or streamed to one external data file."""

    def __init__(self, data_path: Path | None) -> None:
        self.data_path = data_path
        self.file = open(data_path, "wb") if data_path is not None else None
        self.offset = 0
        self.nbytes = 0

    def __call__(self, name: str, arr: np.ndarray) -> TensorProto:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        self.nbytes += arr.nbytes
        if self.file is None:
            return numpy_helper.from_array(arr, name)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=arr.shape)
        self.file.write(arr.tobytes())
        for key, value in (("location", self.data_path.name), ("offset", self.offset), ("length", arr.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        tensor.data_location = TensorProto.EXTERNAL
        self.offset += arr.nbytes
        return tensor

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def build_model(path: Path, layout: Layout, *, seed: int, external: bool) -> int:
    """Write the synthetic model to ``path`` layer by layer; returns the float32 weight bytes."""
    rng = np.random.default_rng(seed)
    sink = TensorSink(path.with_suffix(".onnx.data") if external else None)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...], scale: float = 0.02) -> str:
        inits.append(sink(name, rng.laplace(0.0, scale, shape).astype(np.float32)))
        return name

    def bias(name: str, n: int) -> str:
        inits.append(sink(name, rng.laplace(0.0, 0.01, n).astype(np.float32)))
        return name

    c, d = layout.channels, layout.width
    x = "x"
    for i in range(layout.n_conv + 1):
        cin = 3 if i == 0 else c
        w, b = weight(f"conv{i}.weight", (c, cin, 3, 3)), bias(f"conv{i}.bias", c)
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu_conv{i}"], name=f"relu_conv{i}"))
        x = f"relu_conv{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"))
    w, b = weight("fc0.weight", (d, c)), bias("fc0.bias", d)  # Gemm with transB, as torch exports Linear
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["fc0"], transB=1, name="fc0"))
    nodes.append(helper.make_node("Relu", ["fc0"], ["relu_fc0"], name="relu_fc0"))
    x = "relu_fc0"
    dims = [d] * layout.n_hidden + [layout.d_out]
    for i, dout in enumerate(dims, start=1):
        w, b = weight(f"fc{i}.weight", (d, dout)), bias(f"fc{i}.bias", dout)
        nodes.append(helper.make_node("MatMul", [x, w], [f"mm{i}"], name=f"fc{i}.matmul"))
        nodes.append(helper.make_node("Add", [f"mm{i}", b], [f"fc{i}"], name=f"fc{i}.add"))
        if i < len(dims):
            nodes.append(helper.make_node("Relu", [f"fc{i}"], [f"relu_fc{i}"], name=f"relu_fc{i}"))
            x = f"relu_fc{i}"
    sink.close()
    graph = helper.make_graph(
        nodes, "synthetic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info(f"fc{len(dims)}", TensorProto.FLOAT, [1, layout.d_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="throughput.py")
    model.ir_version = 8
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return sink.nbytes


@dataclass
class Run:
    """One operation in a child process."""

    name: str
    seconds: float
    peak_rss_mb: float
    out_bytes: int | None = None
    ok: bool = True
    error: str = ""
    all_seconds: list[float] = field(default_factory=list)


#: Times each operation runs (--repeat); the table shows the fastest run.
REPEAT = 3


def run_child(name: str, cmd: list[str], *, timeout: float, outputs: list[Path] = (), repeat: int | None = None) -> Run:
    """Run ``cmd`` in a fresh process :data:`REPEAT` times; its best wall time and its peak RSS.

    The command is started by a small runner process, which reports the time and
    ``RUSAGE_CHILDREN.ru_maxrss``: a child spawned straight from this (large) process would inherit
    this process's peak RSS, since Linux carries the high-water mark of the address space over exec.
    Outputs are removed before each run (onnxdc does not overwrite without ``--force``, and a fresh
    file is what a user writes); the page cache is flushed (``os.sync``) so one run's dirty pages do
    not slow the next. Best-of-N, as ``timeit`` reports: on a shared machine the slower runs
    measure the neighbours. ``repeat`` overrides :data:`REPEAT` (a minutes-long run is run once).
    """
    runs: list[Run] = []
    for _ in range(REPEAT if repeat is None else repeat):
        for path in with_sidecars(list(outputs)):
            path.unlink(missing_ok=True)
        os.sync()
        runs.append(_run_once(name, cmd, timeout=timeout, outputs=outputs))
        if not runs[-1].ok:
            break
    run = min(runs, key=lambda r: (not r.ok, r.seconds))
    run.all_seconds = [r.seconds for r in runs]
    run.peak_rss_mb = max(r.peak_rss_mb for r in runs)
    print(f"  {name:<42} {run.seconds:8.2f} s  {run.peak_rss_mb:8.0f} MB"
          + (f"  {run.out_bytes:,} B" if run.out_bytes else "") + (f"  FAILED {run.error}" if not run.ok else "")
          + (f"  (runs: {', '.join(f'{t:.2f}' for t in run.all_seconds)})" if len(runs) > 1 else ""),
          file=sys.stderr)
    return run


def _run_once(name: str, cmd: list[str], *, timeout: float, outputs: list[Path]) -> Run:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-S", "-c", RUNNER, str(timeout), *cmd], stdout=subprocess.PIPE,
                              stderr=err, text=True, check=False)
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    stat = json.loads(proc.stdout)
    run = Run(name, stat["seconds"], stat["maxrss_kib"] / 1024)  # ru_maxrss is in KiB on Linux
    if stat["returncode"] != 0:
        run.ok = False
        run.error = f"exit {stat['returncode']}: {message.splitlines()[-1] if message else ''}"
    elif outputs:
        run.out_bytes = sum(p.stat().st_size for p in with_sidecars(list(outputs)) if p.exists())
    return run


def with_sidecars(paths: list[Path]) -> list[Path]:
    """``paths`` and the external data files ``onnxdc decompress`` wrote beside them
    (``OUT.<digest>.data``, named by content)."""
    return [q for p in paths for q in [p, *sorted(p.parent.glob(p.name + ".*.data"))]]


def sha256_files(paths: list[Path]) -> list[str]:
    """Digest of each file, streamed."""
    out = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):  # noqa: B023
                h.update(chunk)
        out.append(h.hexdigest())
    return out


def same_initializers(a: Path, b: Path) -> bool:
    """Whether two models hold bit-identical initializers (external data loaded)."""
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    ta = {t.name: numpy_helper.to_array(t).tobytes() for t in ma.graph.initializer}
    del ma
    return all(ta.get(t.name) == numpy_helper.to_array(t).tobytes() for t in mb.graph.initializer) \
        and len(ta) == len(mb.graph.initializer)


def profile(model_path: Path, top: int) -> dict[str, list[dict]]:
    """cProfile the fixed-settings and lossless compressions in-process; top functions by tottime."""
    from onnxdc import CompressConfig, compress, load_model
    from onnxdc.api import SharingConfig

    model = load_model(model_path)
    out = {}
    for label, config in (("compress --sparsity 0.9 --bits 5", CompressConfig(
            sharing=SharingConfig(sparsity=0.9, bits=5), jobs=1)), ("compress --lossless", CompressConfig(jobs=1))):
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(compress, model, config=config)
        total = time.perf_counter() - t
        stats = pstats.Stats(prof, stream=io.StringIO())
        rows = []
        for (file, line, func), (_cc, ncalls, tottime, cumtime, callers) in stats.stats.items():
            # the caller that spent the most time in it, to tell which stage a library call belongs to
            top_caller = max(callers.items(), key=lambda kv: kv[1][3], default=None)
            rows.append({"function": f"{_short(file)}:{line}({func})", "ncalls": ncalls,
                         "tottime": tottime, "cumtime": cumtime,
                         "main_caller": (f"{_short(top_caller[0][0])}:{top_caller[0][1]}({top_caller[0][2]})"
                                         if top_caller else "")})
        rows.sort(key=lambda r: -r["tottime"])
        out[label] = {"seconds": total, "top": rows[:top]}
    return out


def _short(file: str) -> str:
    for marker in ("/onnxdc/", "site-packages/"):
        if marker in file:
            return file.split(marker, 1)[1] if marker == "site-packages/" else "onnxdc/" + file.split(marker, 1)[1]
    return file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=25_000_000, help="float32 weights in the synthetic model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None, help="onnxdc compress -j (default: the CLI default, cores)")
    ap.add_argument("--external-above", type=int, default=400_000_000,
                    help="write external data above this many parameters")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per operation")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--profile", action="store_true", help="cProfile the two onnxdc compressions in-process")
    ap.add_argument("--top", type=int, default=10, help="functions shown per profile")
    ap.add_argument("--workdir", type=Path, help="keep the files here instead of a temporary directory")
    ap.add_argument("--repeat", type=int, default=3, help="runs per operation; the fastest is reported")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip zstd and quantize_dynamic (zstd -19 takes about 25 minutes on a 4 GB model)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    # An installed package has its bytecode compiled (pip does it); a source tree run with
    # PYTHONDONTWRITEBYTECODE would recompile onnxdc in every child and time that instead.
    compileall.compile_dir(str(Path(onnxdc.__file__).parent), quiet=1)
    py = sys.executable
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        layout = plan(args.params)
        external = layout.params() > args.external_above
        model = tmp / "model.onnx"
        t = time.perf_counter()
        weight_bytes = build_model(model, layout, seed=args.seed, external=external)
        gen_s = time.perf_counter() - t
        files = [model] + ([model.with_suffix(".onnx.data")] if external else [])
        file_bytes = sum(p.stat().st_size for p in files)
        print(f"model: {layout.params():,} parameters ({layout}), {weight_bytes:,} weight bytes, "
              f"{file_bytes:,} file bytes, external={external}, generated in {gen_s:.1f} s", file=sys.stderr)
        mb = weight_bytes / 1e6
        jobs = [] if args.jobs is None else ["-j", str(args.jobs)]
        to = args.timeout
        runs: dict[str, Run] = {}
        runs["python startup"] = run_child("python startup (import onnxdc.cli, onnx)", [
            py, "-c", "import onnx, numpy, onnxdc.cli"], timeout=to)
        runs["ort load+run"] = run_child("onnxruntime load + 1 run", [py, "-c", ORT_RUN, str(model)], timeout=to)
        fixed, lossless = tmp / "fixed.onnxdc", tmp / "lossless.onnxdc"
        runs["onnxdc fixed"] = run_child("onnxdc compress -s 0.9 -b 5", [
            py, "-c", ONNXDC, "compress", str(model), "--sparsity", "0.9", "--bits", "5", "-q", "-o", str(fixed),
            *jobs], timeout=to, outputs=[fixed])
        dec_fixed = tmp / "fixed.onnx"
        ext = ["--external-data"] if external else []  # written beside the output as OUT.<digest>.data
        runs["onnxdc fixed decompress"] = run_child("onnxdc decompress (fixed)", [
            py, "-c", ONNXDC, "decompress", str(fixed), "-o", str(dec_fixed), "-q", "--no-check", *ext],
            timeout=to, outputs=[dec_fixed])
        runs["onnxdc lossless"] = run_child("onnxdc compress --lossless", [
            py, "-c", ONNXDC, "compress", str(model), "--lossless", "-q", "-o", str(lossless), *jobs],
            timeout=to, outputs=[lossless])
        dec_lossless = tmp / "lossless.onnx"
        runs["onnxdc lossless decompress"] = run_child("onnxdc decompress (lossless)", [
            py, "-c", ONNXDC, "decompress", str(lossless), "-o", str(dec_lossless), "-q", "--no-check", *ext],
            timeout=to, outputs=[dec_lossless])
        if (args.jobs or os.cpu_count() or 1) > 1:  # the same single-threaded, as zstd below
            for key, opts in (("onnxdc fixed", ["--sparsity", "0.9", "--bits", "5"]),
                              ("onnxdc lossless", ["--lossless"])):
                out = tmp / "j1.onnxdc"
                runs[f"{key} -j 1"] = run_child(f"{key} compress -j 1", [
                    py, "-c", ONNXDC, "compress", str(model), *opts, "-q", "-o", str(out), "-j", "1"],
                    timeout=to, outputs=[out])
                out.unlink(missing_ok=True)
        checks = {}
        if runs["onnxdc lossless decompress"].ok:
            checks["onnxdc lossless bit-exact"] = same_initializers(model, dec_lossless)
        digests = sha256_files(files)
        for level in () if args.no_peers else (19, 3):
            zst = tmp / f"model.zst{level}"
            outs = [Path(f"{zst}.{i}") for i in range(len(files))]
            runs[f"zstd -{level}"] = run_child(f"zstd -{level} (1 thread)", [
                py, "-c", ZSTD_COMPRESS, str(level), str(zst), *map(str, files)], timeout=to, outputs=outs)
            back = tmp / f"model.unzst{level}"
            backs = [Path(f"{back}.{i}") for i in range(len(files))]
            runs[f"zstd -{level} decompress"] = run_child(f"zstd -{level} decompress", [
                py, "-c", ZSTD_DECOMPRESS, str(back), *map(str, outs)], timeout=to, outputs=backs)
            checks[f"zstd -{level} byte-exact"] = sha256_files(backs) == digests
            for p in outs + backs:
                p.unlink(missing_ok=True)
        q8 = tmp / "model.int8.onnx"
        if not args.no_peers:
            runs["ort int8"] = run_child("onnxruntime quantize_dynamic QInt8", [
                py, "-c", ORT_QUANTIZE, str(model), str(q8), "1" if external else "0"], timeout=to)
        if "ort int8" in runs and runs["ort int8"].ok:
            runs["ort int8"].out_bytes = sum(p.stat().st_size for p in tmp.iterdir() if p.name.startswith(q8.name))
        for p in with_sidecars([dec_fixed, dec_lossless]):
            p.unlink(missing_ok=True)
        profiles = profile(model, args.top) if args.profile else {}

    rows = table(runs, weight_bytes, mb)
    pairs = comparisons(runs)
    info = {"params": layout.params(), "layout": asdict(layout), "weight_bytes": weight_bytes, "repeat": REPEAT,
            "file_bytes": file_bytes, "external_data": external, "generate_seconds": gen_s,
            "jobs": args.jobs if args.jobs is not None else os.cpu_count(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "machine": platform.machine(), "seed": args.seed}
    print(render(info, rows, pairs, checks, profiles))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "runs": {k: asdict(v) for k, v in runs.items()},
                                         "rows": rows, "onnxdc_vs_peer": pairs, "checks": checks,
                                         "profiles": profiles}, indent=2) + "\n")


def table(runs: dict[str, Run], weight_bytes: int, mb: float) -> list[dict]:
    """One row per operation: seconds, MB/s of float32 weights, peak RSS, output bytes, ratio."""
    rows = []
    for key, r in runs.items():
        reference = key in ("python startup", "ort load+run")
        compressing = not key.endswith("decompress") and not reference
        rows.append({"operation": key, "ok": r.ok, "seconds": r.seconds, "mb_per_s": None if reference else mb / r.seconds,
                     "peak_rss_mb": r.peak_rss_mb, "out_bytes": r.out_bytes,
                     "ratio": weight_bytes / r.out_bytes if (r.out_bytes and compressing) else None,
                     "error": r.error})
    return rows


def comparisons(runs: dict[str, Run]) -> list[dict]:
    """onnxdc / peer for sizes and times, both measured in this run (< 1 means onnxdc is smaller/faster)."""
    pairs = [("onnxdc lossless", "zstd -19"), ("onnxdc lossless", "zstd -3"), ("onnxdc fixed", "zstd -19"),
             ("onnxdc fixed", "zstd -3"), ("onnxdc fixed", "ort int8")]
    pairs += [(f"{ours} -j 1", peer) for ours, peer in pairs if f"{ours} -j 1" in runs]
    out = []
    for ours, peer in pairs:
        if peer not in runs:  # --no-peers
            continue
        a, b = runs[ours], runs[peer]
        if not (a.ok and b.ok):
            continue
        da, db = runs.get(f"{ours.removesuffix(' -j 1')} decompress"), runs.get(f"{peer} decompress")
        out.append({"onnxdc": ours, "peer": peer, "size": a.out_bytes / b.out_bytes if b.out_bytes else None,
                    "compress_time": a.seconds / b.seconds,
                    "decompress_time": da.seconds / db.seconds if (da and db and da.ok and db.ok) else None,
                    "peak_rss": a.peak_rss_mb / b.peak_rss_mb})
    return out


def render(info: dict, rows: list[dict], pairs: list[dict], checks: dict, profiles: dict) -> str:
    """The markdown tables."""
    def f(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [f"Model: {info['params']:,} float32 parameters ({info['weight_bytes'] / 1e6:.1f} MB of weights, "
             f".onnx {info['file_bytes']:,} bytes{', external data' if info['external_data'] else ''}); "
             f"{info['layout']['n_conv'] + 1} Conv ({info['layout']['channels']} ch), "
             f"{info['layout']['n_hidden'] + 2} Gemm/MatMul (width {info['layout']['width']}); "
             f"onnxdc -j {info['jobs']}, {info['cpus']} CPUs; seconds: the fastest of {info['repeat']} runs.", "",
             "| operation | seconds | MB/s (f32 weights) | peak RSS MB | output bytes | ratio vs f32 weights |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['operation']} | FAILED: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['operation']} | {r['seconds']:.2f} | {f(r['mb_per_s'], '.1f')} | {r['peak_rss_mb']:.0f} | "
                     f"{f(r['out_bytes'], ',')} | {f(r['ratio'], '.2f')}{'x' if r['ratio'] else ''} |")
    lines += ["", "onnxdc / peer, same run (< 1: onnxdc smaller, faster, or lighter):", "",
              "| onnxdc | peer | size | compress time | decompress time | compress peak RSS |",
              "|---|---|---:|---:|---:|---:|"]
    for p in pairs:
        lines.append(f"| {p['onnxdc']} | {p['peer']} | {f(p['size'], '.3f')} | {p['compress_time']:.2f} | "
                     f"{f(p['decompress_time'], '.2f')} | {p['peak_rss']:.2f} |")
    if checks:
        lines += ["", "Round trips: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) + "."]
    for label, prof in profiles.items():
        lines += ["", f"cProfile of `{label}` in-process (jobs=1), {prof['seconds']:.1f} s, top by total time:", "",
                  "| function | calls | tottime s | cumtime s | main caller |", "|---|---:|---:|---:|---|"]
        for r in prof["top"]:
            lines.append(f"| `{r['function']}` | {r['ncalls']:,} | {r['tottime']:.2f} | {r['cumtime']:.2f} | "
                         f"`{r['main_caller']}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
