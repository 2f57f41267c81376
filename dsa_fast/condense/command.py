"""What the two commands share (``cli.py``: ``python -m dsa_fast.condense``; ``evaluate_command.py``:
``python -m dsa_fast.evaluate``): the name the user typed, and an error as one line."""
from __future__ import annotations

import argparse
import os
import sys

from .rng import RUN_SEEDS, check_run_seed

PREFIX = "dsa_fast.condense: "  # the library's errors start so; the commands print their own name


def invoked_as(module_form: str) -> str:
    """The command's name as the user typed it: the console script's name (``dsa-condense``), or
    ``module_form`` when Python ran a ``__main__.py`` (``python -m ...``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return module_form if name in ("", "-c", "-m", "__main__.py") else name


def run_seed(text: str) -> int:
    """argparse type of --seed: an int in the run-seed range, or one line that names the range."""
    try:
        return check_run_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {RUN_SEEDS}, got {text}") from None


def strip_prefix(e: Exception) -> str:
    """The message of ``e`` without the library's prefix (the command names itself instead)."""
    msg = str(e)
    return msg[len(PREFIX):] if msg.startswith(PREFIX) else msg
