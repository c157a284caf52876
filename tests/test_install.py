"""The project as a user installs it: the built wheel in an empty folder, every command run from
outside the checkout (no editable install, no checkout on the path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (without its dependencies, which this
    interpreter has) into an empty folder; returns (folder, environment)."""
    root = tmp_path_factory.mktemp("install")
    wheels, target, source = root / "wheels", root / "site", root / "source"
    source.mkdir()  # a copy of what a wheel is built from: setuptools writes build/ beside it
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("vesuvius_data", "trainer"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(source)], check=True, cwd=root)
    (wheel,) = wheels.glob("vesuvius_data-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, cwd=root)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    return target, env, root


def _run(installed, *argv: str, cwd: Path | None = None) -> str:
    target, env, root = installed
    exe = target / "bin" / argv[0]
    proc = subprocess.run([sys.executable, str(exe), *argv[1:]], capture_output=True,
                          text=True, env=env, cwd=cwd or root)
    assert proc.returncode == 0, f"{argv}: {proc.stderr[-2000:]}"
    return proc.stdout


def test_the_wheel_holds_the_packages_commands_and_configs(installed):
    target, env, root = installed
    assert sorted(p.name for p in (target / "bin").iterdir()) == sorted(SCRIPTS)
    assert (target / "trainer" / "configs" / "cpu_smoke.yaml").is_file()
    where = subprocess.run([sys.executable, "-c", "import vesuvius_data, trainer; "
                            "print(vesuvius_data.__file__); print(trainer.__file__)"],
                           capture_output=True, text=True, env=env, cwd=root, check=True)
    assert all(line.startswith(str(target)) for line in where.stdout.split())


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_command_answers_help_from_anywhere(installed, command):
    # argparse's usage line; the trainer and crossval print their docs and config keys
    expect = {"vesuvius-train": "--overwrite", "vesuvius-crossval": "vesuvius-crossval --config"}
    assert expect.get(command, "usage:") in _run(installed, command, "--help")


def test_synth_ingest_index_train_predict_evaluate_from_outside_the_checkout(installed):
    _, _, root = installed
    work = root / "work"
    work.mkdir()
    _run(installed, "vesuvius-synth", "comp", "--volumes", "2", "--shape", "48", cwd=work)
    _run(installed, "vesuvius-ingest", "comp", "store.zarr", cwd=work)
    assert "surface share of LABELED voxels" in _run(
        installed, "vesuvius-index", "store.zarr", "--patch-size", "16", cwd=work)
    _run(installed, "vesuvius-train", "--config", "cpu_smoke", "--data_dir=store.zarr",
         "--out=run", "--patch_size=16", "--stride=8", "--num_folds=2", "--epochs=1",
         "--iterations_per_epoch=2", "--val_iterations=1", "--num_workers=0",
         "--initial_filters=4", "--depth=2", "--metric_every=1", cwd=work)
    out = _run(installed, "vesuvius-predict", "run", "comp/train_images", "pred",
               "--zip", "submission.zip", cwd=work)
    assert "post-processing stored with the model" in out
    table = _run(installed, "vesuvius-evaluate", "comp/train_labels", "store.zarr", cwd=work)
    assert "1.0000" in table.splitlines()[-1]  # labels scored against themselves
    assert "(2 volumes)" in _run(installed, "vesuvius-evaluate", "submission.zip",
                                 "comp/train_labels", cwd=work)
