"""`python tools/verify.py ...` is `vesuvius-verify ...` (vesuvius_data.commands.verify)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.verify"))
