"""The public API of onnxdc: everything the command line and the benchmarks use, and nothing else.

In memory (a ``ModelProto``, container bytes):

* :func:`compress` (lossless with ``CompressConfig()``, manual with ``CompressConfig(sharing=...)``,
  calibrated with ``calibration=`` data) and :func:`decompress` (float, or a deployable form:
  :func:`deploy`);
* :func:`compress_auto`: the automatic mode (per-tensor settings chosen within a :class:`Budget`).

On paths (models with external data, containers streamed tensor by tensor):

* :func:`compress_path`, :func:`compress_file`, :func:`decompress_file`, :func:`deploy_file`,
  :func:`compress_auto_path`; :func:`inspect_file` reads a container's header only.

Configs are frozen dataclasses: :class:`CompressConfig`, :class:`SharingConfig` (with
:class:`PruneConfig`, :class:`ShareConfig`, recipe :class:`Rule`), :class:`Budget`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxdc._version import __version__
from onnxdc.analysis import Analysis, TensorAnalysis, analyze, decoded_weights, format_analysis, original_weights
from onnxdc.auto.budget import SHORTHAND_GATES, Budget, check_budget, mean_cosine
from onnxdc.auto.engine import compress_rd as _search_compress_auto
from onnxdc.auto.reuse import reuse_command
from onnxdc.auto.search import (
    AUTO_MIN_ELEMENTS,
    AutoResult,
    recipe_toml,
    sensitivity,
    split,
)
from onnxdc.calibration.samples import Layout, Samples
from onnxdc.calibration.synthetic import DEFAULT_DIM, defaulted_dims, parse_dims, synthetic_inputs
from onnxdc.coders import coder_from_spec, get_coder, registered_coders
from onnxdc.coders.rans_ctx import contexts as level_contexts
from onnxdc.compare import compare_coders, format_comparison
from onnxdc.errors import (
    CoderError,
    ConfigError,
    ContainerError,
    DataError,
    DecodeError,
    EncodeError,
    MissingDependencyError,
    ModelError,
    Notice,
    OnnxdcError,
    OutputError,
    Progress,
    UnknownCoderError,
)
from onnxdc.evaluate import (
    EvalResult,
    Metric,
    OutputFn,
    OutputMetrics,
    Reference,
    compare,
    evaluate,
    evaluate_candidate,
    load_data,
    prepare_reference,
    session_thread_count,
    session_threads,
    set_session_threads,
)
from onnxdc.fileio.atomic import check_output_path, read_regular_file, regular_file_size, write_atomic
from onnxdc.fileio.oserrors import read_error
from onnxdc.format.container import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RATIO,
    MAGIC,
    Container,
    open_container,
    read_container,
)
from onnxdc.gates import METRICS as GATE_METRICS
from onnxdc.gates import Gate, Verdict, parse_gate
from onnxdc.gates import check_outputs as check_gate_outputs
from onnxdc.gates import judge as judge_gates
from onnxdc.gates import optional as optional_gates
from onnxdc.onnx_io.check import check_model_quietly
from onnxdc.onnx_io.tensors import load_model, model_input_files
from onnxdc.pipeline.decode import decompress as _decompress_float
from onnxdc.pipeline.deploy import FORMS, Deployed, DeployReport, TensorForm, check_form, deploy, deploy_file
from onnxdc.pipeline.encode import CompressConfig, CompressResult, compress
from onnxdc.pipeline.paths import compress_file, decompress_file
from onnxdc.pipeline.plan import WeightPlan, plan_sharing
from onnxdc.pipeline.settings import AUTO_INDEX_CODERS, Rule, SharingConfig, load_recipe
from onnxdc.pipeline.shared import encode_shared, row_length
from onnxdc.pipeline.streams import order0_entropy_bits
from onnxdc.report import Report, build_report, format_report, format_stages, printable, report_for
from onnxdc.stages.prune import PruneConfig, prune
from onnxdc.stages.quantize import Clustering, ShareConfig, kmeans_1d
from onnxdc.structure import format_structure, structure
from onnxdc.study import CoderStudy, StudyRow, coder_study, format_study
from onnxdc.threads import usable_cores

__all__ = [
    "Analysis", "MissingDependencyError", "TensorAnalysis", "analyze", "analyze_file", "decoded_weights",
    "format_analysis", "format_stages", "format_structure", "html_report_file", "structure", "original_weights",
    "AUTO_INDEX_CODERS", "AUTO_MIN_ELEMENTS", "AutoResult", "Budget", "Clustering", "CoderError", "CompressConfig",
    "CompressResult", "ConfigError", "Container", "ContainerError", "DEFAULT_DIM", "DataError", "DecodeError", "EncodeError", "EvalResult",
    "MAGIC", "ModelError", "Notice", "OnnxdcError", "OutputError", "Progress", "PruneConfig", "Report", "Rule",
    "ShareConfig", "SharingConfig", "UnknownCoderError", "WeightPlan", "__version__", "auto_inputs",
    "build_report", "check_model_quietly", "check_output_path", "coder_from_spec", "coder_study", "CoderStudy",
    "StudyRow", "compare_coders", "format_study",
    "compress", "compress_auto", "compress_auto_path", "compress_file", "compress_path", "decompress",
    "decompress_file", "defaulted_dims", "encode_shared", "kmeans_1d", "prune", "evaluate", "format_comparison", "format_report", "get_coder",
    "inspect_file", "Layout", "level_contexts", "load_data", "Samples", "read_container_file", "load_model", "load_recipe", "model_input_files", "open_container",
    "order0_entropy_bits", "parse_dims", "plan_sharing", "printable", "read_container", "read_regular_file", "recipe_toml",
    "registered_coders", "report_for", "reuse_command", "row_length", "sensitivity", "sensitivity_path", "split", "synthetic_inputs", "write_atomic",
    "GATE_METRICS", "SHORTHAND_GATES", "Gate", "OutputFn", "Verdict", "check_gate_outputs", "judge_gates", "optional_gates", "parse_gate",
    "Metric", "OutputMetrics", "Reference", "check_budget", "compare", "evaluate_candidate", "mean_cosine",
    "prepare_reference",
    "session_thread_count", "session_threads", "set_session_threads", "usable_cores",
    "FORMS", "Deployed", "DeployReport", "TensorForm", "check_form", "deploy", "deploy_file",
]


def compress_path(model: str | os.PathLike[str], out: str | os.PathLike[str], *, config: CompressConfig,
                  calib: Any = None, layout: Layout | None = None, progress: Progress | None = None,
                  notice: Notice | None = None, overwrite: bool = False) -> Report:
    """Compress the model file ``model`` into ``out`` (lossless, manual or calibrated mode).

    Without calibration data the model is read and coded tensor by tensor, straight to the output
    file (external data never all in memory); with ``calib`` (any source :func:`load_data` reads,
    with ``layout``; at most ``config.calib_samples`` used) the model is loaded whole, since
    calibration runs it.
    """
    if calib is None:
        return report_for(*compress_file(model, out, config=config, progress=progress, notice=notice,
                                         overwrite=overwrite))
    from dataclasses import replace

    loaded = load_model(model)
    data = load_data(calib, model=loaded, max_samples=config.calib_samples, layout=layout, notice=notice)
    result = compress(loaded, config=replace(config, calibration=data), progress=progress, notice=notice)
    write_atomic(out, result.data, overwrite=overwrite)
    return build_report(result.container)


def compress_auto(model: onnx.ModelProto, *, budget: Budget, data: Mapping[str, np.ndarray],
                  notice: Notice | None = None, explicit: Collection[str] | None = None, **kwargs: Any) -> AutoResult:
    """The automatic mode in memory: :func:`check_budget` first (a rule the model's outputs cannot
    judge is an error when in ``explicit``, default the rules not at their default value, else a
    notice), then the search (:func:`onnxdc.auto.engine.compress_rd`, which takes ``kwargs``:
    ``base``, ``max_samples``, ``record``, ``zstd_level``, ``jobs``, ``progress``)."""
    check_budget(model, data, budget=budget, explicit=explicit, notice=notice)
    return _search_compress_auto(model, budget=budget, data=data, notice=notice, **kwargs)


@dataclass(frozen=True)
class AutoInputs:
    """The inputs the automatic mode measures on, and where they came from."""

    data: Mapping[str, np.ndarray]
    source: str
    synthetic: bool


def auto_inputs(model: onnx.ModelProto, *, calib: Any, samples: int, dims: dict[str, int], seed: int,
                layout: Layout | None = None, notice: Notice | None = None) -> AutoInputs:
    """Calibration data from ``calib`` (any source :func:`load_data` reads), or synthetic inputs
    built from the model's input specs."""
    if calib is not None:
        what = str(calib) if isinstance(calib, (str, os.PathLike)) else type(calib).__name__
        return AutoInputs(load_data(calib, model=model, max_samples=samples, layout=layout, notice=notice),
                          f"calibration data {what!r}", False)
    return AutoInputs(synthetic_inputs(model, samples=min(samples, 128), dims=dims, seed=seed, layout=layout),
                      "synthetic inputs", True)


@dataclass(frozen=True)
class AutoPathResult:
    """What :func:`compress_auto_path` wrote: the search's result, and the recipe file (None when
    no tensor was weight-shared)."""

    auto: AutoResult
    report: Report
    recipe: Path | None
    #: The command that reuses the recipe (``--calib`` and the options that decided the result
    #: included); None with no recipe.
    reuse: str | None = None


def compress_auto_path(model: str | os.PathLike[str], out: str | os.PathLike[str], recipe_out: str | os.PathLike[str],
                       *, base: SharingConfig, budget: Budget, calib: Any = None, layout: Layout | None = None,
                       dims: dict[str, int] | None = None, max_samples: int = 512, zstd_level: int = 19,
                       jobs: int = 1, overwrite: bool = False, progress: Progress | None = None,
                       notice: Notice | None = None, explicit: Collection[str] | None = None,
                       on_inputs: Callable[[AutoInputs], None] | None = None) -> AutoPathResult:
    """The automatic mode on files: measure, choose within ``budget``, compress, verify; write the
    container to ``out`` and the chosen settings as a recipe to ``recipe_out``.

    ``on_inputs`` is told which inputs were chosen before the (long) measurement starts. The
    budget is first checked against the model's outputs (:func:`check_budget`; ``explicit`` names
    the rules the user asked for, which are errors rather than notices when they cannot be judged).

    Raises:
        ModelError: the model cannot run; when synthetic inputs guessed symbolic dimensions, the
            message says which and how to give them.
    """
    dims = dims or {}
    loaded = load_model(model)
    inputs = auto_inputs(loaded, calib=calib, samples=max_samples, dims=dims, seed=base.seed, layout=layout,
                         notice=notice)
    if on_inputs is not None:
        on_inputs(inputs)
    try:
        auto = compress_auto(loaded, base=base, data=inputs.data, budget=budget, max_samples=max_samples,
                             record={"calibration_source": inputs.source}, zstd_level=zstd_level, jobs=jobs,
                             progress=progress, notice=notice, explicit=explicit)
    except ModelError as exc:
        guessed = defaulted_dims(loaded, dims, layout) if inputs.synthetic else []
        if not guessed:
            raise
        raise ModelError(f"{exc} (synthetic inputs set {', '.join(guessed)} to {DEFAULT_DIM}; give the "
                         f"model's sizes with --dim NAME=VALUE, or real inputs with --calib)") from None
    write_atomic(out, auto.result.data, overwrite=overwrite)
    recipe = reuse = None
    if auto.choice.rules:
        reuse = reuse_command(model=model, recipe=recipe_out, base=auto.sharing, calib=calib, calib_samples=max_samples,
                              zstd_level=zstd_level)
        how = ("" if calib is not None else "\n(no --calib: the settings were chosen on synthetic inputs; give real "
               "data with --calib to fit each layer to its outputs)")
        header = (f"onnxdc automatic settings for {Path(model).name} on {inputs.source}\n"
                  f"budget: {json.dumps(budget.to_json())}\n"
                  "each tensor's zero fraction and index bits as the rate-distortion engine chose them; "
                  f"reused with\n{reuse}{how}\nthey are Deep Compression at those settings, not the same quantizer")
        write_atomic(recipe_out, recipe_toml(auto.choice.rules, header=header).encode(), overwrite=overwrite)
        recipe = Path(recipe_out)
    elif overwrite and os.path.lexists(recipe_out):
        os.unlink(recipe_out)  # an earlier run's recipe would describe settings this container does not use
    return AutoPathResult(auto, build_report(auto.result.container), recipe, reuse)


def sensitivity_path(model: str | os.PathLike[str], *, base: SharingConfig, calib: Any = None,
                     layout: Layout | None = None,
                     dims: dict[str, int] | None = None, max_samples: int = 512, progress: Progress | None = None,
                     notice: Notice | None = None,
                     on_inputs: Callable[[AutoInputs], None] | None = None) -> list[dict]:
    """Measure each weight tensor of the model file ``model`` alone against sparsity and bits, on
    ``calib`` data or synthetic inputs (``on_inputs`` is told which, before the measurement).

    Returns:
        One row per measured point (:meth:`onnxdc.auto.search.Point.to_json`), tensor by tensor.
    """
    loaded = load_model(model)
    inputs = auto_inputs(loaded, calib=calib, samples=max_samples, dims=dims or {}, seed=base.seed, layout=layout,
                         notice=notice)
    if on_inputs is not None:
        on_inputs(inputs)
    fit, check = split(inputs.data, max_samples=max_samples)
    points = sensitivity(loaded, plan_sharing(loaded, base), fit, check, progress=progress)
    return [p.to_json() for pts in points.values() for p in pts]


def decompress(data: bytes | Container, *, form: str = "float", progress: Progress | None = None,
               max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
               ) -> onnx.ModelProto:
    """Rebuild the model a container holds: float tensors (``form="float"``, as stored before
    compression) or a deployable form, ``"qdq"`` or ``"palettized"`` (:func:`deploy`, whose
    report says which tensors were rewritten). The output limits are
    :func:`onnxdc.pipeline.decode.decompress`'s.
    """
    limits = {"max_output_bytes": max_output_bytes, "max_ratio": max_ratio}
    if check_form(form) == "float":
        return _decompress_float(data, progress=progress, **limits)
    return deploy(data, form=form, progress=progress, **limits).model


def read_container_file(path: str | os.PathLike[str]) -> Container:
    """Read and validate a whole container file (every stream's checksum checked)."""
    return read_container(read_regular_file(path, error=ContainerError, what="container"))


def inspect_file(path: str | os.PathLike[str]) -> Container:
    """A container file's validated header, without reading or checking its payload (the
    returned container's streams cannot be read: use :func:`read_container_file` to decode)."""
    regular_file_size(path, error=ContainerError, what="container")
    try:
        with open(path, "rb") as fh:
            return open_container(fh, check_streams=False)
    except OSError as exc:
        raise read_error(exc, path, cls=ContainerError, kind="a container") from None


def analyze_file(path: str | os.PathLike[str]) -> Analysis:
    """The ``report`` analysis of a container file: every stream checked and every shared tensor's
    levels decoded (:mod:`onnxdc.analysis`)."""
    return analyze(read_container_file(path))


def html_report_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                     model: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Analysis:
    """Write the ``report --html`` page of the container ``path`` to ``out``, and return its analysis.

    The histograms show ``model``'s weights when given (the container's original: every stored
    tensor must be found in it at its place, name and shape), else the decoded ones.

    Raises:
        MissingDependencyError: matplotlib (the ``report`` extra) is not installed; checked before
            anything is decoded.
        ModelError: ``model`` is not the container's original.
    """
    from onnxdc.html_report import html_report, require_matplotlib

    require_matplotlib()
    container = read_container_file(path)
    original = original_weights(load_model(model), container) if model is not None else None
    decoded: dict[int, np.ndarray] = {}
    result = analyze(container, on_values=lambda t, values: decoded.__setitem__(t.slot, values))
    page = html_report(result, title=Path(path).name, decoded=decoded, original=original)
    write_atomic(out, page.encode("utf-8"), overwrite=overwrite)
    return result
