"""Command-line tools; each is ``main(argv) -> int`` so tests can call it in-process."""
