"""`python tools/crossval.py ...` is `vesuvius-crossval ...` (trainer.commands.crossval)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("trainer.commands.crossval"))
