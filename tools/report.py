"""`python tools/report.py ...` is `vesuvius-report ...` (trainer.commands.report)."""
import sys

from _shim import run

if __name__ == "__main__":
    sys.exit(run("trainer.commands.report"))
