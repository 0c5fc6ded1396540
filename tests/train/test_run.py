"""Training runs end to end: learning, metrics vs checkpoint, resume, determinism, CLI errors."""
import csv
import dataclasses
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from dfbst_np.cli import main
from dfbst_np.sparse.mask_rule import effective_threshold
from dfbst_np.train.checkpoint import load_checkpoint, save_checkpoint
from dfbst_np.train.config import default_config
from dfbst_np.train.run import Run, load_data, read_metrics
from dfbst_np.train.trainer import Trainer


def small_config(**kw):
    base = dict(dataset="sample", epochs=3, train_limit=1280, test_limit=500, milestones=(2,),
                dtype="float64")
    base.update(kw)
    return default_config(kw.pop("model", "lenet300_100"), kw.pop("method", "dfbst"), **base)


@pytest.fixture(scope="module")
def sample_data():
    return load_data(small_config())


def test_training_learns_on_the_sample(tmp_path, sample_data):
    run = Run(small_config(), tmp_path / "run", data=sample_data)
    rows = run.train(progress=False, log=lambda s: None)
    assert len(rows) == 3
    assert rows[-1]["ce"] < rows[0]["ce"]            # the loss goes down
    assert rows[-1]["test_acc"] > 0.6                # 10 classes: chance is 0.1
    assert rows[-1]["density"] < 1.0 and rows[-1]["bdensity"] < 1.0
    assert 0 < rows[-1]["flops_ideal"] < rows[-1]["flops_exact"] < 1.0


def test_metrics_densities_match_checkpoint_masks(tmp_path, sample_data):
    cfg = small_config(epochs=2)
    Run(cfg, tmp_path / "run", data=sample_data).train(progress=False, log=lambda s: None)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    total_kept = total = 0
    for name in ("fc1", "fc2", "fc3"):
        w, t = ck[f"model/{name}.weight"], ck[f"model/{name}.threshold"]
        mask = np.abs(w) > effective_threshold(t, "dfbst")[:, None]     # the forward the weights imply
        np.testing.assert_array_equal(mask, ck[f"mask/{name}"])
        assert rows[-1][f"density/{name}"] == pytest.approx(mask.mean(), abs=1e-12)
        assert rows[-1][f"bdensity/{name}"] == pytest.approx(ck[f"dmask/{name}"].mean(), abs=1e-12)
        total_kept += mask.sum()
        total += mask.size
    assert rows[-1]["density"] == pytest.approx(total_kept / total, abs=1e-12)


def test_kill_and_resume_equals_uninterrupted(tmp_path, sample_data, monkeypatch):
    cfg = small_config(epochs=3)
    full = Run(cfg, tmp_path / "full", data=sample_data)
    full.train(progress=False, log=lambda s: None)

    # Crash in the middle of epoch 2: the epoch-1 checkpoint is what remains.
    real_step, calls = Trainer.step, {"n": 0}
    steps_per_epoch = 1280 // 64

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 7:
            raise KeyboardInterrupt("killed")
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg, tmp_path / "killed", data=sample_data).train(progress=False, log=lambda s: None)
    monkeypatch.setattr(Trainer, "step", real_step)
    assert len(read_metrics(tmp_path / "killed" / "metrics.csv")) == 1

    resumed = Run.resume(tmp_path / "killed", data=sample_data)
    assert resumed.epoch == 1
    resumed.train(progress=False, log=lambda s: None)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ra, rb = read_metrics(tmp_path / "full" / "metrics.csv"), read_metrics(tmp_path / "killed" / "metrics.csv")
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}


def test_same_seed_same_metrics(tmp_path, sample_data):
    cfg = small_config(epochs=2, dtype="float32")
    data32 = load_data(cfg)
    for name in ("a", "b"):
        Run(cfg, tmp_path / name, data=data32).train(progress=False, log=lambda s: None)

    def columns(name):
        with open(tmp_path / name / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]

    assert columns("a") == columns("b")
    other = dataclasses.replace(cfg, seed=8)
    Run(other, tmp_path / "c", data=data32).train(progress=False, log=lambda s: None)
    assert columns("c") != columns("a")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"a": np.arange(3)})

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": np.arange(5)})
    np.testing.assert_array_equal(load_checkpoint(path)["a"], np.arange(3))   # old one intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]                  # no temp left


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_checkpoint_mode_follows_the_umask(tmp_path, umask):
    # Written like any other file (0666 less the umask), not 0600 as a mkstemp file is.
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "ck.npz", {"a": np.arange(3)})
        save_checkpoint(tmp_path / "ck.npz", {"a": np.arange(4)})     # the replacing write too
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ck.npz").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


# -- the command line: one clear message, exit status 2, no traceback ---------------------
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dfbst_np", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["train", "--model", "alexnet"], "invalid choice: 'alexnet'"),
    (["train", "--method", "magic"], "invalid choice: 'magic'"),
    (["train", "--dataset", "imagenet", "--epochs", "1"], "imagenet"),
    (["train", "--dataset", "mnist", "--data-root", "/nonexistent/folder", "--epochs", "1"],
     "/nonexistent/folder"),
])
def test_cli_bad_input_is_one_clear_message(args, words, tmp_path):
    r = run_cli(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert words in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_corrupt_checkpoint(tmp_path, sample_data):
    cfg = small_config(epochs=1, train_limit=128, test_limit=100)
    Run(cfg, tmp_path / "run").train(progress=False, log=lambda s: None)
    ck = tmp_path / "run" / "checkpoint.npz"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])     # truncated
    r = run_cli("train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress")
    assert r.returncode == 2
    assert "checkpoint.npz" in r.stderr and "corrupt" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_train_and_plot_in_process(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--epochs", "1", "--train-limit", "256", "--test-limit", "100",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy, final" in printed and "forward density M" in printed
    assert main(["plot", str(out)]) == 0
    for name in ("accuracy.png", "density.png", "flops.png"):
        assert (out / name).stat().st_size > 1000
