"""`python tools/derive.py ...` is `vesuvius-derive ...` (vesuvius_data.commands.derive)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.derive"))
