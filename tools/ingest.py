"""`python tools/ingest.py ...` is `vesuvius-ingest ...` (vesuvius_data.commands.ingest)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("vesuvius_data.commands.ingest"))
