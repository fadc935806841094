"""Deep Compression settings: command-line defaults, TOML recipes, and per-tensor resolution.

Resolution order for one tensor: built-in defaults by layer kind (Han et al.: conv 8 bits, fully
connected 5 bits), then the run's global options, then every recipe rule that matches the tensor,
in file order (later rules win). A rule matches by name glob, by op type, or both (both must hold).
A tensor's op types are those of the nodes reading it as a weight or bias, followed through
Identity / Cast / Transpose / Reshape; a weight held in a Constant node takes the op types of the
nodes reading the Constant's output. A tensor read by several ops (a MatMul and a Gemm) has them
all, and a rule naming any of them matches it.

A recipe::

    [[rule]]
    match = "fc*"          # fnmatch glob on the tensor name
    op_type = "Gemm"       # or a list, ["Gemm", "MatMul"]: the op types reading the tensor
    sparsity = 0.92        # or std_threshold = 0.7
    bits = 5
    init = "linear"        # linear | density | forgy
    coder = "huffman"      # auto or a coder spec such as huffman+zstd
    positions = "auto"     # auto | relative | mask | dense
    codebook_dtype = "float16"
    lossless = true        # store this tensor exactly instead
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from onnxdc.coders import coder_from_spec
from onnxdc.dtypes import CODEBOOK_DTYPES
from onnxdc.errors import ConfigError
from onnxdc.onnx_io.candidates import WEIGHT_INPUTS
from onnxdc.pipeline.streams import candidate_coders
from onnxdc.stages.positions import SCHEMES
from onnxdc.stages.prune import PruneConfig
from onnxdc.stages.quantize import INITS, ShareConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_BITS = {"conv": 8, "fc": 5, "rnn": 8, "embedding": 8, "bias": 8}
RULE_KEYS = {"match", "op_type", "sparsity", "std_threshold", "bits", "init", "coder", "positions",
             "codebook_dtype", "lossless"}
#: Candidate coders for index streams under ``coder = "auto"`` (raw takes the tensor's bits).
AUTO_INDEX_CODERS: list[dict[str, Any]] = candidate_coders()


#: The op types whose weights are compressed: the only ones an ``op_type`` rule can name.
OP_TYPES = tuple(sorted(WEIGHT_INPUTS))


@dataclass(frozen=True)
class Rule:
    """One recipe rule: which tensors (a name glob, op types, or both) and the settings it overrides.

    ``match`` None matches every name; ``op_type`` empty matches every op type.
    """

    match: str | None
    settings: dict[str, Any]
    op_type: tuple[str, ...] = ()

    def matches(self, name: str, op_types: tuple[str, ...] = ()) -> bool:
        """Whether the rule applies to tensor ``name`` read by ops ``op_types``."""
        if self.match is not None and not fnmatch.fnmatchcase(name, self.match):
            return False
        return not self.op_type or any(op in self.op_type for op in op_types)

    def selector(self) -> dict[str, Any]:
        """The rule's ``match`` / ``op_type`` keys as a recipe writes them."""
        out: dict[str, Any] = {}
        if self.match is not None:
            out["match"] = self.match
        if self.op_type:
            out["op_type"] = self.op_type[0] if len(self.op_type) == 1 else list(self.op_type)
        return out

    def describe(self) -> str:
        """``match = "fc*", op_type = "Gemm"``: how messages name the rule."""
        return ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.selector().items())


@dataclass(frozen=True)
class SharingConfig:
    """Settings of a Deep Compression run (the manual mode).

    Attributes:
        sparsity / std_threshold / global_prune: the pruning rule (see :mod:`onnxdc.stages.prune`).
        bits: index width for every tensor; None means by layer kind (:data:`DEFAULT_BITS`).
        init, codebook_dtype: k-means settings.
        coder: ``auto`` or a coder spec for the index streams.
        positions: position scheme, ``auto`` picks the smallest per tensor.
        min_elements: smaller tensors are stored losslessly.
        include_bias: also weight-share biases (by default they are stored losslessly).
        rules: recipe rules, applied in order.
        seed: seed for every random choice (recorded in the container).
    """

    sparsity: float | None = None
    std_threshold: float | None = None
    global_prune: bool = False
    bits: int | None = None
    init: str = "linear"
    codebook_dtype: str = "float32"
    coder: str = "auto"
    positions: str = "auto"
    min_elements: int = 1024
    include_bias: bool = False
    rules: tuple[Rule, ...] = field(default=())
    seed: int = 0

    def __post_init__(self) -> None:
        PruneConfig(self.sparsity, self.std_threshold, self.global_prune)
        if self.bits is not None:
            ShareConfig(bits=self.bits)
        _check_choice("init", self.init, INITS)
        _check_choice("codebook dtype", self.codebook_dtype, tuple(CODEBOOK_DTYPES))
        _check_choice("positions", self.positions, ("auto", *SCHEMES))
        index_coders(self.coder)
        if self.min_elements < 0:
            raise ConfigError(f"min elements must be >= 0, got {self.min_elements}")

    def to_json(self) -> dict[str, Any]:
        """The settings that differ from the defaults, plus the seed, as recorded in the container."""
        out: dict[str, Any] = {"seed": self.seed}
        defaults = SharingConfig()
        for key, name in (("sparsity", "sparsity"), ("std_threshold", "std_threshold"), ("global", "global_prune"),
                          ("bits", "bits"), ("init", "init"), ("codebook_dtype", "codebook_dtype"),
                          ("coder", "coder"), ("positions", "positions"), ("min_elements", "min_elements"),
                          ("include_bias", "include_bias")):
            if getattr(self, name) != getattr(defaults, name):
                out[key] = getattr(self, name)
        if self.rules:
            out["rules"] = [{**r.selector(), **r.settings} for r in self.rules]
        return out


@dataclass(frozen=True)
class TensorSettings:
    """The resolved settings of one tensor."""

    lossless: bool
    prune: PruneConfig
    share: ShareConfig
    coders: list[dict[str, Any]]
    positions: str


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def index_coders(spec: str) -> list[dict[str, Any]]:
    """Candidate coder configs for a ``coder`` setting (``auto`` or a spec)."""
    if spec == "auto":
        return AUTO_INDEX_CODERS
    if spec == "raw":
        return [{"id": "raw"}]
    return [coder_from_spec(spec).get_config()]


def load_recipe(path: str | Path) -> tuple[Rule, ...]:
    """Read a TOML recipe file into rules.

    Raises:
        ConfigError: the file is missing, not TOML, or holds unknown keys or bad values.
    """
    from onnxdc.fileio.atomic import refuse_special_file

    refuse_special_file(path, error=ConfigError, what="recipe")  # not /dev/zero, not a FIFO
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe {str(path)!r}: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {str(path)!r} is not valid TOML: {exc}") from None
    return parse_rules(doc, source=str(path))


def parse_rules(doc: dict[str, Any], *, source: str = "recipe") -> tuple[Rule, ...]:
    """Validate a parsed recipe document (``{"rule": [...]}``) and return its rules."""
    unknown = set(doc) - {"rule"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected [[rule]]")
    rules = doc.get("rule", [])
    if not isinstance(rules, list):
        raise ConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    out = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise ConfigError(f"{source}: rule {i} is not a table")
        bad = set(r) - RULE_KEYS
        if bad:
            raise ConfigError(f"{source}: rule {i} has unknown key(s) {', '.join(sorted(bad))}; "
                              f"allowed: {', '.join(sorted(RULE_KEYS))}")
        if "match" not in r and "op_type" not in r:
            raise ConfigError(f"{source}: rule {i} needs a 'match' glob on tensor names or an 'op_type'")
        if "match" in r and not isinstance(r["match"], str):
            raise ConfigError(f"{source}: rule {i} needs a string 'match' glob, got {r['match']!r}")
        op_type = _op_types(r["op_type"], where=f"{source}: rule {i}") if "op_type" in r else ()
        settings = {k: v for k, v in r.items() if k not in ("match", "op_type")}
        _resolve_one(settings, base=None, where=f"{source}: rule {i}")  # validates values
        out.append(Rule(r.get("match"), settings, op_type))
    return tuple(out)


def _op_types(value: Any, *, where: str) -> tuple[str, ...]:
    """An ``op_type`` value (a string or a non-empty list of them), each an op whose weights are
    compressed: a rule naming ``Relu`` or ``conv`` could never match, so it is refused here."""
    ops = [value] if isinstance(value, str) else value
    if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
        raise ConfigError(f"{where}: 'op_type' must be a string or a non-empty list of strings, got {value!r}")
    for op in ops:
        if op not in OP_TYPES:
            raise ConfigError(f"{where}: op_type {op!r} has no weights onnxdc compresses; "
                              f"choose among {', '.join(OP_TYPES)}")
    return tuple(dict.fromkeys(ops))


def resolve(name: str, kind: str, config: SharingConfig, *, op_types: tuple[str, ...] = ()) -> TensorSettings:
    """The settings for tensor ``name`` of layer ``kind``, read by ops ``op_types``, under ``config``."""
    base = TensorSettings(
        lossless=kind == "bias" and not config.include_bias,
        prune=PruneConfig(config.sparsity, config.std_threshold, config.global_prune),
        share=ShareConfig(bits=config.bits or DEFAULT_BITS.get(kind, 8), init=config.init,
                          codebook_dtype=config.codebook_dtype, seed=config.seed),
        coders=index_coders(config.coder),
        positions=config.positions,
    )
    for rule in config.rules:
        if rule.matches(name, op_types):
            base = _resolve_one(rule.settings, base=base, where=f"rule {rule.describe()}")
    return base


def _resolve_one(settings: dict[str, Any], *, base: TensorSettings | None, where: str) -> TensorSettings:
    if base is None:
        base = TensorSettings(False, PruneConfig(), ShareConfig(), AUTO_INDEX_CODERS, "auto")
    try:
        prune = base.prune
        if "sparsity" in settings or "std_threshold" in settings:
            prune = PruneConfig(sparsity=_num(settings.get("sparsity")),
                                std_threshold=_num(settings.get("std_threshold")),
                                global_=False)
        share_kw = {k: settings[k] for k in ("bits", "init", "codebook_dtype") if k in settings}
        share = replace(base.share, **share_kw) if share_kw else base.share
        coders = index_coders(_str(settings["coder"], "coder")) if "coder" in settings else base.coders
        positions = base.positions
        if "positions" in settings:
            positions = _str(settings["positions"], "positions")
            _check_choice("positions", positions, ("auto", *SCHEMES))
        lossless = base.lossless
        if "lossless" in settings:
            if not isinstance(settings["lossless"], bool):
                raise ConfigError("'lossless' must be true or false")
            lossless = settings["lossless"]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return TensorSettings(lossless, prune, share, coders, positions)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"expected a number, got {v!r}")
    return float(v)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{what} must be a string, got {v!r}")
    return v
