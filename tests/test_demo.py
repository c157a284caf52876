"""The README's main job, in-process on tiny data: every stage runs and reruns resume."""

from trainer.commands import demo


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "demo"), "--volumes", "2", "--shape", "48",
            "--patch-size", "16", "--patch_size=16", "--stride=8",
            "--num_folds=2", "--epochs=1", "--iterations_per_epoch=2", "--val_iterations=1",
            "--num_workers=0", "--initial_filters=4", "--depth=2", "--metric_every=1",
            "--test-volumes", "1"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "surface/labeled" in out  # census table
    assert "surface share of LABELED voxels" in out  # index summary
    assert (tmp_path / "demo" / "index_report.png").is_file()
    for name in ("uniform", "balanced", "label-weighted", "hard-negative"):
        assert name in out
    assert "loader (balanced, 2 workers)" in out
    assert "Epoch 0 | Train Loss:" in out and "verdict:" in out
    assert (tmp_path / "demo" / "runs" / "cpu_smoke" / "report.png").is_file()
    # the run stored its post-processing, the submission was predicted with it and scored
    assert "post-processing stored with the model" in out
    assert (tmp_path / "demo" / "test" / "test_images").is_dir()
    assert (tmp_path / "demo" / "submission.zip").is_file()
    for row in ("submission (model + stored post-processing)", "intensity threshold (sigma",
                "empty prediction"):
        assert row in out
    assert demo.main(argv) == 0  # second run: nothing regenerated or re-read
    out = capsys.readouterr().out
    assert "already there" in out and "skipped 2 already complete" in out
    assert "0 volumes indexed, 2 reused unchanged" in out
    assert "resuming" in out and "nothing left to train" in out and "Epoch 0" not in out
    assert "verdict:" in out
    assert out.count("already there") == 3 and "(newer than the model)" in out
