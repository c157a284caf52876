"""`python tools/synth.py ...` is `vesuvius-synth ...` (vesuvius_data.commands.synth)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.synth"))
