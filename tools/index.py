"""`python tools/index.py ...` is `vesuvius-index ...` (vesuvius_data.commands.index)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.index"))
