"""``python -m dsa_fast.evaluate RUN_DIR/synthetic.pt``: evaluate a condensed set (see
``dsa_fast.condense.evaluate_command`` and docs/condense.md)."""
import sys

from .condense.evaluate_command import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m dsa_fast.evaluate"))
