"""`python tools/tune_postprocess.py ...` is `vesuvius-tune ...` (trainer.commands.tune)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("trainer.commands.tune"))
