"""``python -m dsa_fast.evaluate RUN_DIR/synthetic.pt``: evaluate a condensed set (see
``dsa_fast.condense.cli.evaluate_main`` and docs/condense.md)."""
import sys

from .condense.cli import evaluate_main as main

if __name__ == "__main__":
    sys.exit(main(prog="python -m dsa_fast.evaluate"))
