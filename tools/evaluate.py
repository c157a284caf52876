"""`python tools/evaluate.py ...` is `vesuvius-evaluate ...` (vesuvius_data.commands.evaluate)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.evaluate"))
