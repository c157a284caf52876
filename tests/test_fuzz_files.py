"""Every kind of file a command reads, damaged by generated edits, given to that command.

The promise under test (README, "Reliability"): a damaged input never ends in a traceback or
an anonymous message. Each case copies an intact world of small files, damages one file
(truncation at a random offset, bit flips, an empty file, a directory in its place, a value of
the wrong type in JSON/YAML, an image of the wrong dimensionality or dtype) and runs the
command that reads it, in-process. It must end in exit status 2 with one ``error:`` line that
names the file, or, where the damage is harmless (a flipped pixel, a JSON field nobody reads),
in the command's normal success. Ingest and evaluate report per-volume failures and exit 1,
as documented; each failure line still names its file.

Hypothesis draws the edits with fixed seeds (``derandomize``), so CI sees the same cases every
run; ``FUZZ_EXAMPLES`` raises the count for a longer hunt.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_faults import tiny_cfg

from trainer.checkpoint import save_checkpoint
from trainer.cli import main as train_main
from trainer.commands import predict, report
from trainer.config import check_names, config_to_yaml, load_config
from trainer.model import build_model
from trainer.postprocessing import Postprocessing, write_postprocessing
from vesuvius_data import VolumeStore, build_index
from vesuvius_data.commands import evaluate, index, ingest, strategies
from vesuvius_data.repair import RepairConfig
from vesuvius_data.store.competition import ingest_competition
from vesuvius_data.synthetic import write_competition_layout

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
OUTCOMES: Counter = Counter()  # (kind, exit status): the tally the README quotes


# ---------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """One of every file the commands read, intact: a competition layout, a store, an index,
    a run folder (checkpoint, config, metrics, post-processing), a model folder and a
    submission zip."""
    root = tmp_path_factory.mktemp("fuzz_world")
    write_competition_layout(root / "comp", 2, (32, 32, 32), seed=11, progress=False)
    store = VolumeStore.create(root / "store.zarr", chunks=(16, 16, 16))
    assert not ingest_competition(root / "comp", store, progress=False).failed
    build_index(store, 16, 8, progress=False).save(root / "index.npz")
    cfg = tiny_cfg(store.location, root / "run")
    model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision)
    (root / "run").mkdir()
    save_checkpoint(root / "run" / "best.pt", {"model": model.state_dict(),
                                               "config": asdict(cfg)})
    (root / "run" / "config.yaml").write_text(config_to_yaml(cfg))
    record = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "lr": 1e-3, "score": 0.4,
              "dice": 0.4, "terms": {"dice": 0.3, "focal": 0.2},
              "train": {"pred_fg": 0.2, "label_fg": 0.1},
              "val": {"fg_recall": 0.5, "bg_recall": 0.9, "balanced_accuracy": 0.7},
              "competition": {"score": 0.5}, "alarms": []}
    (root / "run" / "metrics.jsonl").write_text(
        "".join(json.dumps(record | {"epoch": e}) + "\n" for e in (1, 2)))
    pp = Postprocessing(RepairConfig(), score=0.6, threshold_only=0.5, tuned_on=["a"],
                        source="fuzz")
    write_postprocessing(root / "run" / "postprocessing.json", pp)
    for k in (0, 1):
        shutil.copytree(root / "run", root / "model" / f"fold_{k}")
    (root / "model" / "crossval.json").write_text(json.dumps(
        {"folds": [0, 1], "val_ids": {"0": ["a"], "1": ["b"]}, "config": asdict(cfg)}))
    write_postprocessing(root / "model" / "postprocessing.json", pp)
    (root / "test").mkdir()
    vid = store.ids()[0]
    tifffile.imwrite(root / "test" / f"{vid}.tif", store.image(vid)[...].compute())
    labels = {v: store.label(v)[...].compute() for v in store.ids()}
    (root / "pred").mkdir()
    for v, lab in labels.items():
        tifffile.imwrite(root / "pred" / f"{v}.tif", (lab == 1).astype(np.uint8))
    shutil.make_archive(str(root / "submission"), "zip", root / "pred")
    return root


@contextlib.contextmanager
def copy_of(world: Path):
    """A fresh copy of the world for one case (hypothesis reuses the test's tmp_path)."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "w"
        shutil.copytree(world, dst)
        yield dst


def run(command: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = command(argv)
    return status, err.getvalue()


# ---------------------------------------------------------------------------- damage
@dataclass(frozen=True)
class Damage:
    """One edit of one file; ``arg`` is what hypothesis drew for it."""

    kind: str
    arg: object = None

    def apply(self, path: Path) -> None:
        if self.kind == "missing":
            path.unlink()
        elif self.kind == "directory":
            path.unlink()
            path.mkdir()
        elif self.kind == "empty":
            path.write_bytes(b"")
        elif self.kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: int(self.arg * len(data))])  # type: ignore[operator]
        elif self.kind == "flip":
            data = bytearray(path.read_bytes())
            for where, bit in self.arg:  # type: ignore[attr-defined]
                data[int(where * len(data)) % len(data)] ^= 1 << bit
            path.write_bytes(bytes(data))
        elif self.kind in ("json", "yaml", "jsonl"):
            self._retype(path)
        elif self.kind == "array":
            tifffile.imwrite(path, self.arg, photometric="minisblack")
        elif self.kind == "npz":  # one member of an index replaced by another array
            steps, value = self.arg  # type: ignore[misc]
            with np.load(path, allow_pickle=False) as z:
                members = {k: z[k] for k in z.files}
            key = sorted(members)[steps % len(members)]
            members[key] = value
            with open(path, "wb") as f:
                np.savez(f, **members)
        elif self.kind == "checkpoint":  # a value inside a checkpoint replaced by another type
            steps, value = self.arg  # type: ignore[misc]
            state = torch.load(path, weights_only=True)
            torch.save(_replace(state, steps, value), path)
        else:
            raise AssertionError(self.kind)

    def _retype(self, path: Path) -> None:
        """Replace one value somewhere in the document by a value of another type."""
        steps, value = self.arg  # type: ignore[misc]
        text = path.read_text()
        if self.kind == "jsonl":
            lines = text.splitlines()
            line = steps[0] % len(lines) if steps else 0
            lines[line] = json.dumps(_replace(json.loads(lines[line]), steps[1:], value))
            path.write_text("\n".join(lines) + "\n")
        elif self.kind == "json":
            path.write_text(json.dumps(_replace(json.loads(text), steps, value)))
        else:
            path.write_text(yaml.safe_dump(_replace(yaml.safe_load(text), steps, value)))


def _replace(doc, steps: list[int], value):
    """``doc`` with the node reached by ``steps`` (child indices, modulo each node's size)
    replaced by ``value``; the walk stops early at a leaf."""
    if not steps or not isinstance(doc, (dict, list)) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[steps[0] % len(keys)]
    doc[key] = _replace(doc[key], steps[1:], value)
    return doc


def file_damage() -> st.SearchStrategy[Damage]:
    fraction = st.floats(0.0, 0.999)
    flips = st.lists(st.tuples(fraction, st.integers(0, 7)), min_size=1, max_size=8)
    return st.one_of(
        st.builds(Damage, st.just("truncate"), fraction),
        st.builds(Damage, st.just("flip"), flips),
        st.sampled_from([Damage("empty"), Damage("directory"), Damage("missing")]))


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
    st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def retyped(kind: str) -> st.SearchStrategy[Damage]:
    steps = st.lists(st.integers(0, 40), max_size=4)
    return st.builds(Damage, st.just(kind), st.tuples(steps, JSON_VALUES))


def npz_member() -> st.SearchStrategy[Damage]:
    shape = st.lists(st.integers(0, 4), max_size=3).map(tuple)
    dtype = st.sampled_from(["uint8", "int64", "float32", "bool", "U3"])
    return st.builds(lambda k, s, d: Damage("npz", (k, np.zeros(s, d))), st.integers(0, 50),
                     shape, dtype)


def checkpoint_value() -> st.SearchStrategy[Damage]:
    steps = st.lists(st.integers(0, 60), min_size=1, max_size=4)
    return st.builds(Damage, st.just("checkpoint"), st.tuples(steps, JSON_VALUES))


def wrong_image() -> st.SearchStrategy[Damage]:
    """A readable TIF that is not a 3-D uint8 volume of the right shape."""
    shape = st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple)  # TIFs are >= 2-D
    dtype = st.sampled_from(["uint8", "uint16", "int16", "float32", "float64", "uint32", "int64"])
    return st.builds(lambda s, d: Damage("array", np.ones(s, d)), shape, dtype)


# ---------------------------------------------------------------------------- the check
def check(kind: str, status: int, err: str, names: tuple[str, ...],
          statuses: tuple[int, ...] = (0, 2)) -> None:
    """No traceback; a documented status; every error line names the file."""
    OUTCOMES[kind, status] += 1
    assert "Traceback" not in err, err
    assert status in statuses, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    if status == 2:
        assert len(errors) == 1, err
    if status != 0:
        assert errors and any(n in ln for n in names for ln in errors), err


# ---------------------------------------------------------------------------- the cases
@FUZZ
@given(damage=st.one_of(file_damage(), wrong_image()), which=st.sampled_from(
    ["train_images", "train_labels"]))
def test_fuzz_competition_tif(world, damage, which):
    with copy_of(world) as w:
        victim = sorted((w / "comp" / which).glob("*.tif"))[0]
        damage.apply(victim)
        status, err = run(ingest.main, [str(w / "comp"), str(w / "new.zarr"), "--workers",
                                        "1", "--quiet"])
        check("competition TIF", status, err, (str(victim), victim.stem), (0, 1, 2))


@FUZZ
@given(damage=st.one_of(file_damage(), st.builds(Damage, st.just("text"), st.text())))
def test_fuzz_train_csv(world, damage):
    with copy_of(world) as w:
        victim = w / "comp" / "train.csv"
        if damage.kind == "text":  # any text at all, as a CSV
            victim.write_text(damage.arg)
        else:
            damage.apply(victim)
        status, err = run(ingest.main, [str(w / "comp"), str(w / "new.zarr"), "--workers",
                                        "1", "--quiet"])
        check("train.csv", status, err, (str(victim),))


@FUZZ
@given(damage=st.one_of(file_damage(), wrong_image()), zipped=st.booleans())
def test_fuzz_prediction_tif_and_zip(world, damage, zipped):
    with copy_of(world) as w:
        if zipped:
            victim = pred = w / "submission.zip"
            if damage.kind == "array":
                return  # a zip is not an image
        else:
            pred = w / "pred"
            victim = sorted(pred.glob("*.tif"))[0]
        damage.apply(victim)
        status, err = run(evaluate.main, [str(pred), str(w / "store.zarr")])
        # a missing prediction is named by its folder and id
        check("prediction TIF / zip", status, err, (str(victim), f"{pred} against"))


def _store_file(world: Path, which: str) -> str:
    """Where a store file of kind ``which`` lives, relative to the world."""
    vid = sorted(p.name for p in (world / "store.zarr" / "volumes").iterdir())[0]
    vol = f"store.zarr/volumes/{vid}"
    return {"root": "store.zarr/zarr.json", "volume": f"{vol}/zarr.json",
            "array": f"{vol}/label/zarr.json", "chunk": f"{vol}/label/c/0/1/0",
            "image chunk": f"{vol}/image/c/1/0/1"}[which]


def _index_argv(w: Path) -> list[str]:
    return [str(w / "store.zarr"), "--patch-size", "16", "--out", str(w / "i.npz"), "--quiet",
            "--rebuild"]


def fuzz_case(world: Path, damage: Damage, victim: str, kind: str,
              command: Callable[[list[str]], int], argv: Callable[[Path], list[str]],
              also_named: Callable[[Path], tuple[str, ...]] = lambda w: ()) -> None:
    """Damage ``victim`` (relative to the world) in a fresh copy, run ``command`` on
    ``argv(copy)``, and check the outcome; ``also_named``: other names that may stand for
    the file in the message (its folder, say)."""
    with copy_of(world) as w:
        damage.apply(w / victim)
        status, err = run(command, argv(w))
        check(kind, status, err, (str(w / victim), *also_named(w)))


@FUZZ
@given(damage=st.one_of(file_damage(), retyped("json")),
       which=st.sampled_from(["root", "volume", "array"]))
def test_fuzz_store_metadata(world, damage, which):
    victim = _store_file(world, which)
    fuzz_case(world, damage, victim, f"store {which} zarr.json", index.main, _index_argv,
              also_named=lambda w: (str((w / victim).parent),))


@FUZZ
@given(damage=file_damage(), which=st.sampled_from(["chunk", "image chunk"]))
def test_fuzz_store_chunk(world, damage, which):
    victim = _store_file(world, which)
    key = victim.split("/", 4)[4]  # store.zarr/volumes/VID/ROLE/c/...
    # a flip that still decodes is caught by the census the index compares, or by the label
    # values it checks, which name the volume and store (vesuvius-verify --deep then names
    # the chunk)
    fuzz_case(world, damage, victim, "store chunk", index.main, _index_argv,
              also_named=lambda w: (f"chunk {key} in {w / 'store.zarr'}",
                                    f"of {w / 'store.zarr'}: "))



@FUZZ
@given(damage=st.one_of(file_damage(), npz_member()))
def test_fuzz_index(world, damage):
    fuzz_case(world, damage, "index.npz", "index .npz", strategies.main,
              lambda w: [str(w / "index.npz"), "--draws", "50"])


@FUZZ
@given(damage=st.one_of(file_damage(), checkpoint_value()))
def test_fuzz_checkpoint(world, damage):
    fuzz_case(world, damage, "run/best.pt", "checkpoint", predict.main,
              lambda w: [str(w / "run" / "best.pt"), str(w / "test"), str(w / "out")])


@FUZZ
@given(damage=st.one_of(file_damage(), retyped("yaml")))
def test_fuzz_config_yaml(world, damage):
    with copy_of(world) as w:
        victim = w / "run" / "config.yaml"
        damage.apply(victim)
        try:
            check_names(load_config(victim))
        except (ValueError, KeyError, FileNotFoundError, IsADirectoryError):
            status, err = run(train_main, ["--config", str(victim)])
            check("config YAML", status, err, (str(victim),), (2,))
        else:  # harmless: it still reads as a config, and training would start
            OUTCOMES["config YAML", 0] += 1


@FUZZ
@given(damage=st.one_of(file_damage(), retyped("jsonl")))
def test_fuzz_metrics_jsonl(world, damage):
    fuzz_case(world, damage, "run/metrics.jsonl", "metrics.jsonl", report.main,
              lambda w: [str(w / "run"), "--out", str(w / "r.png")],
              also_named=lambda w: (str(w / "run"),))


@FUZZ
@given(damage=st.one_of(file_damage(), retyped("json")),
       where=st.sampled_from(["run", "model"]))
def test_fuzz_postprocessing_json(world, damage, where):
    fuzz_case(world, damage, f"{where}/postprocessing.json", "postprocessing.json",
              predict.main, lambda w: [str(w / where), str(w / "test"), str(w / "out")])


@FUZZ
@given(damage=st.one_of(file_damage(), retyped("json")))
def test_fuzz_crossval_json(world, damage):
    fuzz_case(world, damage, "model/crossval.json", "crossval.json", predict.main,
              lambda w: [str(w / "model"), str(w / "test"), str(w / "out")])


def test_fuzz_tally_is_large_enough():
    """Runs last in this module: the suite generated the cases the README promises."""
    cases = sum(OUTCOMES.values())
    if cases == 0:
        pytest.skip("run with the fuzz cases (this module on its own or the whole suite)")
    assert cases >= 200 or EXAMPLES < 20, OUTCOMES
    print("\nfuzz outcomes:", json.dumps({f"{k} -> {s}": n for (k, s), n in
                                          sorted(OUTCOMES.items())}, indent=1))
