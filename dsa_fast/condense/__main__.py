"""``python -m dsa_fast.condense``: see ``dsa_fast.condense.cli``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m dsa_fast.condense"))
