"""The CLI's side of the library's ``progress(done, total, label)`` callback: phases on stderr.

The library reports steps; a *phase* is a run of reports with one label and one total whose count
does not go back (the automatic mode labels its reports with the phase name: statistics, gates,
curves, sensitivity, allocation, verification, encoding). A new label, another total or a count that goes
back starts the next phase. On a terminal each phase gets its own click bar, labelled by the
phase, with the library's total and an ETA; in a log (stderr not a terminal) there is no bar and,
when asked, one line per phase as it ends: ``onnxdc: <phase>: <total> steps in <s> s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import click


@dataclass
class _Phase:
    name: str
    total: int
    done: int
    start: float
    bar: Any = None


class PhaseProgress:
    """A progress callback that splits the reports into phases (see the module docstring).

    Args:
        label: a fixed phase name for commands whose library labels name items (tensors); None:
            the library's label is the phase.
        tty: draw bars (stderr is a terminal).
        log: without bars, write one line per finished phase.
        file: where bars and lines go (stderr).
    """

    def __init__(self, *, label: str | None, tty: bool, log: bool, file: IO[str]) -> None:
        self._label, self._tty, self._log, self._file = label, tty, log, file
        self._phase: _Phase | None = None
        self._finished: tuple[str, int] | None = None  # the last phase ended by reaching its total
        self._last = time.monotonic()

    def __call__(self, done: int, total: int, label: str) -> None:
        name = self._label or label
        cur = self._phase
        if cur is not None and (cur.name != name or cur.total != total or done < cur.done):
            self._end()
            cur = None
        if cur is None:
            if self._finished == (name, total) and done >= total:
                return  # the same last step reported again: not a new phase
            cur = self._phase = _Phase(name, total, done, self._last)
            self._finished = None
            if self._tty:
                cur.bar = click.progressbar(length=max(total, 1), label=name, file=self._file, show_eta=True)
                cur.bar.__enter__()
        cur.done = done
        if cur.bar is not None:
            cur.bar.update(min(done, cur.total) - cur.bar.pos)
        if total > 0 and done >= total:
            self._end()
            self._finished = (name, total)

    def _end(self) -> None:
        cur, self._phase = self._phase, None
        if cur is None:
            return
        now = time.monotonic()
        self._last = now
        if cur.bar is not None:
            cur.bar.__exit__(None, None, None)
        elif self._log:
            steps = f"{cur.total}" if cur.done >= cur.total else f"{cur.done} of {cur.total}"
            click.echo(f"onnxdc: {cur.name}: {steps} steps in {now - cur.start:.1f} s", file=self._file)

    def close(self) -> None:
        """End the phase under way (the command finished or failed)."""
        self._end()


@contextmanager
def progress_callback(quiet: bool, label: str | None = None, *, log: bool = False) -> Iterator[Any]:
    """Yield a library progress callback drawing one bar per phase on stderr (None when quiet).

    ``label`` fixes the phase name (for commands that report tensors, not phases); ``log`` asks for
    a line per phase when stderr is not a terminal (long commands: a CI log shows where time went).
    Without a terminal and without ``log`` nothing is printed.
    """
    tty = sys.stderr.isatty()
    if quiet or not (tty or log):
        yield None
        return
    phases = PhaseProgress(label=label, tty=tty, log=log, file=sys.stderr)
    try:
        yield phases
    finally:
        phases.close()
