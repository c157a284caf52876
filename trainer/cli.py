"""The trainer's command line: ``python -m trainer`` (or ``torchrun ... -m trainer``)."""

from __future__ import annotations

import sys
from pathlib import Path

from vesuvius_data.cli import user_errors

from .checkpoint import load_checkpoint
from .config import (
    apply_overrides,
    check_names,
    config_from_dict,
    config_path,
    describe_keys,
    load_config,
)
from .train import __doc__ as TRAIN_DOC
from .train import train

__all__ = ["main", "parse_trainer_argv"]


def parse_trainer_argv(argv: list[str]) -> tuple[str | None, str | None, bool, dict[str, str]]:
    """``--config PATH``, ``--resume DIR``, ``--overwrite`` and ``--key=value`` / ``--key value``
    overrides."""
    config, resume, overwrite, overrides = None, None, False, {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--overwrite":
            overwrite, i = True, i + 1
            continue
        if arg in ("-h", "--help"):
            print(TRAIN_DOC)
            print("  --overwrite  start afresh in an --out that holds a run (deletes it)\n"
                  "config keys (--key=default  meaning):")
            print(describe_keys())
            raise SystemExit(0)
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")  # --patch-size as the tools spell it, --patch_size too
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"--{key} needs a value")
            value, i = argv[i + 1], i + 1
        if key == "config":
            config = value
        elif key == "resume":
            resume = value
        else:
            overrides[key] = value
        i += 1
    return config, resume, overwrite, overrides


@user_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config, resume, overwrite, overrides = parse_trainer_argv(argv)
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite deletes it: pass one")
    if resume:
        try:
            cfg = config_from_dict(load_checkpoint(resume)["config"])
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            if str(resume) in str(e):
                raise
            raise ValueError(f"{resume}: its config does not load ({e})") from None
        cfg.out = str(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
    else:
        cfg = load_config(config)
    try:
        checked = check_names(apply_overrides(cfg, overrides))  # every name, before data work
    except ValueError as e:
        if config is not None and not resume:  # name the file when the value came from it
            try:
                check_names(cfg)
            except ValueError:
                raise ValueError(f"{config_path(config)}: {e}") from None
        raise
    cfg = checked
    return train(cfg, resume=resume, overwrite=overwrite)


if __name__ == "__main__":
    sys.exit(main())
