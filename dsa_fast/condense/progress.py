"""Progress of a long loop, for people: a tqdm bar on a terminal, plain log lines otherwise.

Both commands use it: the condensation iterations and the evaluation's training passes. A log line
(every ``log_every`` steps and at the last one) reads ``<desc> <done>/<total>  <note>  <rate> <unit>/s
ETA <h:mm:ss>``; on a terminal the same note is the bar's postfix.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from typing import Callable, Optional, Tuple

logger = logging.getLogger("dsa_fast.condense")


def format_seconds(s: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above; ``?`` when unknown."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def plural(n: int, word: str) -> str:
    """``1 image``, ``2 images``, ``2 training passes``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


class Progress:
    """Counts steps towards ``total`` and reports them.

    ``bar``: a tqdm bar (default: when stderr is a terminal), else log lines on ``logger`` every
    ``log_every`` steps and at the last (none when ``total`` is 0). ``clock`` gives the seconds the rate is measured against
    (default: wall time), so a caller can leave out time it spends on something else.
    """

    def __init__(self, total: int, *, desc: str, unit: str, log_every: int, initial: int = 0,
                 bar: Optional[bool] = None, clock: Callable[[], float] = time.perf_counter, leave: bool = True):
        self.total, self.desc, self.unit, self.log_every = total, desc, unit, max(1, log_every)
        self.done = self.initial = initial
        self.clock = clock
        self.start = clock()
        self.show_bar = sys.stderr.isatty() if bar is None else bar
        self._stack = contextlib.ExitStack()
        self._bar = None
        self.leave = leave  # keep the finished bar on screen (False: a bar inside another's run)

    def __enter__(self) -> "Progress":
        if self.show_bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = self._stack.enter_context(tqdm(total=self.total, initial=self.initial, desc=self.desc,
                                                       unit=self.unit, dynamic_ncols=True, leave=self.leave))
            self._stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def due(self, n: int = 1) -> bool:
        """Whether ``update(n)`` will report: the caller computes its note only then (a host sync)."""
        after = self.done + n
        return after == self.total or after // self.log_every > self.done // self.log_every

    def update(self, n: int = 1, note: Optional[str] = None, quiet: bool = False) -> None:
        """Count ``n`` more steps; ``quiet``: no log line for them (the bar still moves)."""
        report = self.due(n) and not quiet
        self.done += n
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        elif report:
            logger.info(self.line(note))

    def line(self, note: Optional[str] = None) -> str:
        seconds = self.clock() - self.start
        rate = (self.done - self.initial) / seconds if seconds > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        parts = [f"{self.desc} {self.done}/{self.total}"] + ([note] if note else [])
        parts += [f"{rate:.2f} {self.unit}/s", f"ETA {format_seconds(eta)}"]
        return "  ".join(parts)


class PlanLine:
    """The first line of a long command: its planned work (``plan``, ``total`` steps) and how long
    all of it takes at the speed of its second call of ``step`` (the first pays one-time costs:
    allocations, set-up), or of its first when that one finished the work. ``quick``: (flag, steps)
    of the command's quick setting, whose time the line also gives."""

    def __init__(self, plan: str, total: int, unit: str, quick: Optional[Tuple[str, int]] = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.plan, self.total, self.unit, self.quick, self.clock = plan, total, unit, quick, clock
        self.start: float = clock()
        self.done, self.timed, self.said = 0, False, False

    def step(self, n: int) -> None:
        if self.said or n <= 0:
            return
        now = self.clock()
        self.done += n
        if not self.timed and self.done < self.total:
            self.start, self.timed = now, True
            return
        self.said = True
        per_step = (now - self.start) / n
        line = (f"{self.plan}; {plural(n, self.unit)} took {now - self.start:.2f} s, so about "
                f"{format_seconds(per_step * self.total)} in all")
        if self.quick is not None:
            flag, steps = self.quick
            line += f" ({flag}: about {format_seconds(per_step * steps)})"
        logger.info(line)
