"""`python tools/demo.py ...` is `vesuvius-demo ...` (trainer.commands.demo)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("trainer.commands.demo"))
