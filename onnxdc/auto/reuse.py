"""The command that reuses an automatic recipe: what the recipe file's header and the CLI print.

The recipe holds per-tensor settings only; what else decided the result must be on the command
line too, or the reuse measures worse than it should. The calibration data matter most: the same
recipe on LeNet-5 without ``--calib`` (magnitude pruning and plain k-means instead of layers fitted
to their outputs) loses 1.75 points of top-1. The automatic mode's own defaults that differ from
the manual mode's (``--min-elements``) and any sharing option the run was given go along.
"""

from __future__ import annotations

import os
import shlex

from onnxdc.pipeline.settings import SharingConfig

#: The manual mode's ``--calib-samples`` default (the command's; the CLI declares it the same).
DEFAULT_CALIB_SAMPLES = 512


def reuse_command(*, model: str | os.PathLike[str], recipe: str | os.PathLike[str], base: SharingConfig,
                  calib: str | os.PathLike[str] | None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
                  zstd_level: int = 19, output: str = "OUT.onnxdc") -> str:
    """``onnxdc compress MODEL --recipe RECIPE [--calib DATA] [options]``: the manual run at the
    automatic mode's settings, with every option needed to reproduce its settings.

    ``base`` is the sharing config the automatic run compressed with (``AutoResult.sharing``: its
    ``min_elements``, biases shared, the options it was given); its rules are the recipe's and are
    not repeated. ``calib`` None means the run measured synthetic inputs, which a manual run cannot
    take: it then compresses by magnitude (the synthetic inputs only chose the settings).
    """
    args = ["onnxdc", "compress", os.fspath(model), "--recipe", os.fspath(recipe)]
    if calib is not None:
        args += ["--calib", os.fspath(calib)]
        if calib_samples != DEFAULT_CALIB_SAMPLES:
            args += ["--calib-samples", str(calib_samples)]
    manual = SharingConfig()
    for flag, name in (("--min-elements", "min_elements"), ("--init", "init"), ("--codebook-dtype", "codebook_dtype"),
                       ("--coder", "coder"), ("--positions", "positions"), ("--seed", "seed")):
        value = getattr(base, name)
        if value != getattr(manual, name):
            args += [flag, str(value)]
    if base.include_bias:
        args.append("--include-bias")
    if zstd_level != 19:
        args += ["--zstd-level", str(zstd_level)]
    args += ["-o", output]
    return shlex.join(args)
