"""The model commands, installed as console scripts (``vesuvius-train``, ``vesuvius-predict``,
``vesuvius-crossval`` ...; ``pyproject.toml`` lists them). Each module's ``main(argv) -> int``
is the command, so tests call it in-process; ``tools/*.py`` in a checkout are shims to these."""
