"""`python tools/predict.py ...` is `vesuvius-predict ...` (trainer.commands.predict)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("trainer.commands.predict"))
