"""`python tools/strategies.py ...` is `vesuvius-strategies ...`
(vesuvius_data.commands.strategies)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.strategies"))
