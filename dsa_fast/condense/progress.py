"""Progress of a long counted task: a tqdm bar on a terminal, else a few log lines with the ETA.

The same two forms as the condensation loop's progress (``loop._condense``): ``show=None`` means
a bar when stderr is a terminal.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from typing import Callable, Iterator, Optional

logger = logging.getLogger("dsa_fast.condense")

LOG_LINES = 10  # at most this many log lines per task (one per tenth done), plus the final one


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@contextlib.contextmanager
def counter(total: int, desc: str, unit: str, show: Optional[bool] = None) -> Iterator[Callable[[int], None]]:
    """Yields ``update(n)``: n more units of ``total`` are done."""
    show = sys.stderr.isatty() if show is None else show
    if show:
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
            yield bar.update
        return
    state = {"done": 0, "next": 1}
    start = time.perf_counter()

    def update(n: int) -> None:
        state["done"] += n
        done = state["done"]
        if total <= 0 or done * LOG_LINES < state["next"] * total:
            return
        while state["next"] * total <= done * LOG_LINES:
            state["next"] += 1
        secs = time.perf_counter() - start
        eta = secs * (total - done) / done if done else float("nan")
        logger.info("%s: %d/%d %s  ETA %s", desc, done, total, unit, format_seconds(eta))

    yield update
