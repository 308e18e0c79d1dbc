"""Progress of long steps, shown the way users expect: in a terminal a bar with the count, the rate and the
time left; in a log (stderr not a terminal: a batch job, ``2> log``, CI) one plain line every
``$MATGNN_PROGRESS_SECONDS`` seconds (default 10) and one at the end, e.g.::

    chgnet features: 1200/6351 structures (38.2/s, 2:15 left)
    chgnet features: 6351/6351 structures in 166.3 s (38.2/s)

Every long step uses it: backbone features, graph builds, prediction, baselines' fits, ensembles' members,
sweeps' points, Matbench folds. Nothing is printed for steps that end before the first report is due
(``min_total``: steps smaller than that print nothing at all).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

#: seconds between two lines in a log (stderr not a terminal)
PROGRESS_SECONDS_VARIABLE = "MATGNN_PROGRESS_SECONDS"
_LEVEL = {"level": "normal"}


def set_level(level: str) -> None:
    """``quiet`` (``matgnn -q``: no progress), ``normal``, or ``verbose`` (``-v``: a line every 2 s in a log)."""
    _LEVEL["level"] = level


def _interval() -> float:
    default = "2" if _LEVEL["level"] == "verbose" else "10"
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_VARIABLE, default)))
    except ValueError:
        return 10.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``with Progress("chgnet features", total=n, unit="structures") as p: ... p.advance(k)``.

    ``total`` may be None (a count and a rate, no time left). ``stream``: where to write (default stderr);
    ``enabled=False`` prints nothing (a caller's own quiet mode)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "structures", *, enabled: bool = True,
                 stream: Any = None, min_total: int = 1) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and (total is None or total >= min_total) and _LEVEL["level"] != "quiet"
        self.done = 0
        self.started = time.perf_counter()
        self._last = self.started
        self._interval = _interval()
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled and _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} {task.fields[unit]}/s"), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, rate="0", unit=self.unit)
        return self

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.started, 1e-9)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate:.3g}")
            return
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._line(self._status())

    def _status(self) -> str:
        left = ""
        if self.total and self.done and self.done < self.total:
            left = f", {_clock((self.total - self.done) / max(self.rate, 1e-9))} left"
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.label}: {self.done}{of} {self.unit} ({self.rate:.3g}/s{left})"

    def _line(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):
            pass  # a closed or full log never stops the work

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            return
        if self.enabled and exc[0] is None and self.done:
            seconds = time.perf_counter() - self.started
            if seconds >= self._interval or self._last != self.started:
                of = f"/{self.total}" if self.total is not None else ""
                self._line(f"{self.label}: {self.done}{of} {self.unit} in {seconds:.1f} s ({self.rate:.3g}/s)")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
