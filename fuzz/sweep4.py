"""Sweep 4.0 containers' mutants (``fuzz/mutate4.py``) in process and count how each fares.

For each mutation kind, ``--count`` mutants spread over the containers (the golden fixtures
``tests/fixtures/v4_0_*`` and, lossless and shared, the sample models ``models/*.onnx``); each is
opened (``read_container``) and decoded (``decompress``) and counted as ok, ContainerError (one
line; those over 600 characters counted), another exception, slower than 5 s, or growing the peak
RSS by more than 200 MB (``/proc/self/clear_refs`` resets the peak before each mutant). A fixed
count from a fixed seed, so a run repeats::

    python fuzz/sweep4.py --count 5000 --seed 0 [--kind utf8 ...] [--save DIR]

The process's address space is capped (``--max-memory``), so a mutant that would take the
machine's memory fails with MemoryError (counted as another exception) instead. Exit status 1 when
any mutant is counted other than ok or ContainerError.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import mutate4  # noqa: E402

from onnxdc.errors import ContainerError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SLOW_S, BIG_BYTES, LONG_MESSAGE = 5.0, 200 << 20, 600
_HARD_S = 60  # a mutant still running after this is stopped (where Python code runs)


class _Timeout(BaseException):  # not caught by the library's own handlers
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def containers() -> dict[str, bytes]:
    """The golden 4.0 fixtures and, lossless and shared, the sample models' containers."""
    import onnx

    import onnxdc
    from onnxdc.pipeline.settings import SharingConfig

    out = {p.stem: p.read_bytes() for p in sorted((ROOT / "tests" / "fixtures").glob("v4_0_*.onnxdc"))}
    shared = onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5))
    for path in sorted((ROOT / "models").glob("*.onnx")):
        model = onnx.load(str(path))
        out[f"{path.stem}-lossless"] = onnxdc.compress(model).data
        out[f"{path.stem}-shared"] = onnxdc.compress(model, config=shared).data
    return out


@dataclass
class Tally:
    """One kind's outcomes."""

    ok: int = 0
    refused: int = 0
    other: int = 0
    slow: int = 0
    big: int = 0
    long: int = 0  # refusals whose message is over LONG_MESSAGE characters
    max_s: float = 0.0
    max_rss: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + self.refused + self.other


def one(data: bytes, max_output_bytes: int) -> tuple[str, str]:
    """Open and decode one mutant: ``("ok", "")``, ``("refused", code: message)`` or ``("other", ...)``."""
    import onnxdc

    try:
        onnxdc.decompress(onnxdc.read_container(data), max_output_bytes=max_output_bytes)
        return "ok", ""
    except ContainerError as exc:
        return "refused", f"{exc.code}: {exc}"
    except _Timeout:
        return "other", f"stopped after {_HARD_S} s"
    except Exception as exc:  # noqa: BLE001 - exactly what the sweep looks for
        return "other", f"{type(exc).__name__}: {exc}"


def sweep(kind: str, units: dict[str, mutate4.Unpacked], *, count: int, seed: int, max_output_bytes: int,
          save: Path | None) -> Tally:
    names = sorted(units)
    rng = np.random.default_rng([seed, sorted(mutate4.KINDS).index(kind)])
    tally = Tally()
    for k in range(count):
        name = names[k % len(names)]
        data = mutate4.mutant(kind, units[name], rng)
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the peak RSS starts again from the current
        signal.alarm(_HARD_S)
        t = time.perf_counter()
        outcome, message = one(data, max_output_bytes)
        elapsed = time.perf_counter() - t
        signal.alarm(0)
        grown = _status("VmHWM") - base
        tally.max_s, tally.max_rss = max(tally.max_s, elapsed), max(tally.max_rss, grown)
        setattr(tally, outcome, getattr(tally, outcome) + 1)
        if outcome == "refused":
            code = message.split(":", 1)[0]
            tally.codes[code] = tally.codes.get(code, 0) + 1
            if "\n" in message:
                outcome, message = "other", "a ContainerError of several lines: " + message
                tally.refused, tally.other = tally.refused - 1, tally.other + 1
            elif len(message) > LONG_MESSAGE:
                tally.long += 1
                _note(tally, f"{kind} {name} #{k}: a {len(message)}-character message: {message[:160]}")
        flags = []
        if elapsed > SLOW_S:
            tally.slow += 1
            flags.append(f"{elapsed:.1f} s")
        if grown > BIG_BYTES:
            tally.big += 1
            flags.append(f"+{grown >> 20} MiB RSS")
        if outcome == "other" or flags:
            _note(tally, f"{kind} {name} #{k}: {outcome} {', '.join(flags)} {message[:200]}")
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{kind}-{name}-{k}.onnxdc").write_bytes(data)
    return tally


def _note(tally: Tally, line: str) -> None:
    if len(tally.examples) < 5:
        tally.examples.append(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="mutants per kind, spread over the containers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", action="append", choices=sorted(mutate4.KINDS), help="only these kinds")
    ap.add_argument("--max-output-bytes", type=int, default=1 << 25, help="decompress's ceiling (default 32 MiB)")
    ap.add_argument("--max-memory", type=int, default=4 << 30, help="address-space cap in bytes (default 4 GiB)")
    ap.add_argument("--save", type=Path, help="write each mutant counted other than ok or refused here")
    args = ap.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (args.max_memory, args.max_memory))
    signal.signal(signal.SIGALRM, _on_alarm)
    units = {name: mutate4.unpack(data) for name, data in containers().items()}
    print(f"{len(units)} containers: {', '.join(sorted(units))}", flush=True)
    print("| kind | mutants | ok | ContainerError | other exception | > 5 s | > 200 MB | max s | max RSS MB "
          "| messages > 600 chars |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    bad = 0
    notes: list[str] = []
    for kind in args.kind or sorted(mutate4.KINDS):
        t = sweep(kind, units, count=args.count, seed=args.seed, max_output_bytes=args.max_output_bytes,
                  save=args.save)
        bad += t.other + t.slow + t.big
        print(f"| {kind} | {t.total:,} | {t.ok:,} | {t.refused:,} | {t.other} | {t.slow} | {t.big} | {t.max_s:.2f} "
              f"| {t.max_rss / 1e6:.0f} | {t.long} |", flush=True)
        codes = ", ".join(f"{c} {n}" for c, n in sorted(t.codes.items(), key=lambda x: -x[1]))
        notes.append(f"{kind}: refused by code: {codes}")
        notes.extend(f"  {line}" for line in t.examples)
    print("\n".join(notes))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
