"""Run an installed command from a checkout: ``python tools/NAME.py`` works without installing
(the checkout's root goes first on the import path) and means the same as ``vesuvius-NAME``."""

import importlib
import sys
from pathlib import Path


def run(module: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    return importlib.import_module(module).main()
