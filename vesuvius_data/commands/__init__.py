"""The data commands, installed as console scripts (``vesuvius-ingest``, ``vesuvius-index`` ...;
``pyproject.toml`` lists them). Each module's ``main(argv) -> int`` is the command, so tests
call it in-process; ``tools/*.py`` in a checkout are one-line shims to these."""
