"""Nothing lost, never a traceback (issue 12): one test per class of user mistake or fault.

Each test asserts the exit status, a one-line message that names the file,
flag or entry, and, where a command is refused, that nothing in the run
folder changed. In-process calls of ``main`` prove "no traceback" by
returning at all (an exception would fail the test); the subprocess tests
look at stderr.
"""
import dataclasses
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np

import pytest

from dfbst_np.cli import main
from dfbst_np.errors import ConfigError, DfbstError
from dfbst_np.train.checkpoint import load_checkpoint, save_checkpoint
from dfbst_np.train.config import RunConfig, default_config
from dfbst_np.train.run import Run, load_data, read_metrics
from dfbst_np.train.trainer import Trainer

from .folder_checks import SMALL, one_error_line


def snapshot(folder):
    """Every file under ``folder`` with its bytes and mtime: what "unchanged" means."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. a run folder is never overwritten --------------------------------------------------

def test_train_into_a_used_folder_is_refused(run_dir, tmp_path, capsys, monkeypatch):
    before = snapshot(run_dir)
    assert main(["train", "--epochs", "3", "--out", str(run_dir), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, run_dir, "already holds a run", "2 epoch(s) finished",
                   f"--resume {run_dir}", "--out", "--overwrite")
    assert snapshot(run_dir) == before
    # The same command twice, with the default --out: the second one is refused.
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", *SMALL]) == 0
    default = tmp_path / "runs" / "lenet300_100-dfbst-sample-seed7"
    first = snapshot(default)
    capsys.readouterr()
    assert main(["train", "--epochs", "1", *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "runs/lenet300_100-dfbst-sample-seed7", "--resume")
    assert snapshot(default) == first
    # A folder of other files is not a run: refused too.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["train", "--out", str(tmp_path / "mine"), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "mine", "not a run")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_overwrite_moves_the_old_run_aside(run_dir, capsys):
    before = snapshot(run_dir)
    # A new run that cannot start leaves the old folder where it was.
    assert main(["train", "--out", str(run_dir), "--overwrite", "--dataset", "imagenet", *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "imagenet")
    assert snapshot(run_dir) == before
    assert main(["train", "--epochs", "1", "--out", str(run_dir), "--overwrite", *SMALL]) == 0
    moved = [p for p in run_dir.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and "moved the old" in capsys.readouterr().err
    assert {k: v[0] for k, v in snapshot(moved[0]).items()} == {k: v[0] for k, v in before.items()}
    assert len(read_metrics(run_dir / "metrics.csv")) == 1


def test_config_is_written_only_when_the_run_starts(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", "--dataset", "imagenet", "--out", str(out), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "imagenet")
    assert not out.exists()


# -- 2. --resume keeps its settings ------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], "--lr 0.5"), (["--model", "lenet_5"], "--model lenet_5"),
    (["--method", "dense"], "--method dense"), (["--batch-size", "7"], "--batch-size 7"),
    (["--dtype", "float32"], "--dtype float32"), (["--seed", "3"], "--seed 3"),
    (["--weight-grad", "predicted"], "--weight-grad predicted"),
    (["--out", "elsewhere"], "--out elsewhere"), (["--epochs", "1"], "--epochs 1"),
    (["--overwrite"], "--overwrite"),
])
def test_resume_refuses_conflicting_flags(run_dir, flags, named, capsys):
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), *flags, "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, named)
    assert snapshot(run_dir) == before


def test_resume_accepts_unchanged_and_harmless_flags(run_dir, capsys):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert main(["train", "--resume", str(run_dir), "--lr", str(cfg["lr"]), "--model",
                 cfg["model"], "--epochs", "2", "--no-progress"]) == 0
    assert "2 epochs" in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text()) == cfg


# -- 3. bad values: one line naming the flag or the file ---------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "0"], "--batch-size"), (["--train-limit", "0"], "--train-limit"),
    (["--train-limit", "-1"], "--train-limit"), (["--test-limit", "0"], "--test-limit"),
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--threads", "0"], "--threads"), (["--threads", "-3"], "--threads"),
    (["--alpha", "-1"], "--alpha"), (["--beta", "inf"], "--beta"), (["--lr", "nan"], "--lr"),
    (["--lr", "0"], "--lr"),
])
def test_bad_values_are_refused_before_anything_is_written(flags, named, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", *flags, "--out", str(out), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, named)
    assert not out.exists()


def test_an_unusable_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "file" / "sub"), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, tmp_path / "file" / "sub")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "file"), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, tmp_path / "file", "not a folder")
    assert (tmp_path / "file").read_text() == "x"
    assert main(["check-grads", "--batch-size", "0"]) == 2
    one_error_line(capsys.readouterr().err, "--batch-size")


@pytest.mark.parametrize("flags, named", [
    (["--densities", "2.0"], "--densities"), (["--densities", "0"], "--densities"),
    (["--batches", "0"], "--batches"),
])
def test_bench_values_checked_before_any_variant(flags, named, capsys, tmp_path):
    assert main(["bench", "--quick", "--no-torch", "--out", str(tmp_path), *flags]) == 2
    one_error_line(capsys.readouterr().err, named)
    (tmp_path / "file").write_text("x")
    assert main(["bench", "--quick", "--no-torch", "--out", str(tmp_path / "file")]) == 2
    one_error_line(capsys.readouterr().err, "--out", "file")


@pytest.mark.parametrize("edit, named", [
    (lambda c: {**c, "batch_size": 0}, "batch_size"),
    (lambda c: {**c, "lr": -1}, "lr"),
    (lambda c: {**c, "epochs": "ten"}, "epochs"),
    (lambda c: {**c, "colour": "red"}, "colour"),
    (lambda c: [1, 2], "JSON object"),
    (lambda c: "{not json", "not a valid config.json"),
])
def test_bad_config_json_names_the_file(run_dir, edit, named, capsys):
    path = run_dir / "config.json"
    new = edit(json.loads(path.read_text()))
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, path, named)
    assert snapshot(run_dir) == before


def test_divergence_names_epoch_step_and_suggests_a_smaller_lr(tmp_path, capsys):
    # lr 1e38: with clipping, each step moves a weight by up to lr, so even the last
    # layer's bias alone (all ReLUs dead) overflows float32 within a few steps; a
    # smaller lr diverges or not depending on the dynamics, hence on the CPU.
    out = tmp_path / "d"
    assert main(["train", "--method", "dense", "--lr", "1e38", "--epochs", "2", "--out", str(out),
                 "--train-limit", "512", "--test-limit", "50", "--no-progress"]) == 2
    err = capsys.readouterr().err
    one_error_line(err, "smaller learning rate", "--lr", "this run's is 1e+38")
    # Which non-finite value comes first (AMD: inf, Intel: NaN) and where it shows
    # (a layer's input, a gradient, the loss, the norm) depend on the CPU: any is right,
    # as long as the message says when and what.
    assert re.search(DIVERGED, err), err
    # The API stops the same way, with the project's error (never a StopIteration).
    cfg = default_config("lenet300_100", "dfbst", dataset="sample", epochs=1, lr=1e38,
                         train_limit=512, test_limit=50)
    with pytest.raises(DfbstError, match=DIVERGED + r".*smaller learning rate"):
        Run(cfg, tmp_path / "api").train(progress=False, log=lambda s: None)


#: A divergence message: the epoch, the step (or the test pass), and a cause naming NaN or inf.
DIVERGED = r"(?i)diverged in epoch 1, (step \d+|the test pass): [^\n]*(nan|inf)"


def test_float32_norm_overflow_is_not_divergence():
    """Finite float32 gradients whose sum of squares overflows float32: norm in float64."""
    grads = {"a": np.full(4, 2e19, np.float32), "b": np.ones(3, np.float32)}
    with np.errstate(over="ignore"):      # the float32 dot overflows, as it does in training
        norm, sq = Trainer._checked_norm(grads)
    assert norm == pytest.approx(4e19, rel=1e-6) and np.isfinite(sq).all()
    grads["b"][1] = np.nan
    with pytest.raises(FloatingPointError, match="'b'"), np.errstate(over="ignore"):
        Trainer._checked_norm(grads)


def test_unsafe_pickle_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import pickle

    from dfbst_np.train.data import datasets as ds
    from dfbst_np.train.data.sources import RemoteFile, Source

    from .test_data import md5, tar_gz
    evil = pickle.dumps(print)         # any global but NumPy's rebuilders is refused
    data = tar_gz([("cifar-10-batches-py/test_batch", evil),
                   ("cifar-10-batches-py/batches.meta", evil)]
                  + [(f"cifar-10-batches-py/data_batch_{i}", evil) for i in range(1, 6)])
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(data)
    monkeypatch.setitem(ds.SOURCES, "cifar10", Source("", ("http://127.0.0.1:9/",),
                                                      (RemoteFile("cifar-10-python.tar.gz", md5(data)),)))
    assert main(["train", "--model", "vgg16", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "cifar-10-python.tar.gz", "data_batch_1", "not allowed")


# -- 4. checkpoints are checked entry by entry --------------------------------------------------

def _set(key, value):
    def edit(ck):
        ck[key] = value(ck[key]) if callable(value) else value
    return edit


@pytest.mark.parametrize("edit, named", [
    (_set("dmask/fc1", lambda a: a[:, :-1]), "dmask/fc1"),
    (_set("dmask/fc2", lambda a: a.astype(np.float64)), "dmask/fc2"),
    (_set("model/fc1.weight", lambda a: a.astype(np.int64)), "model/fc1.weight"),
    (_set("model/fc2.weight", lambda a: a.astype(np.complex128)), "model/fc2.weight"),
    (_set("model/fc3.bias", lambda a: a.astype(np.float32)), "model/fc3.bias"),
    (_set("meta/epoch", np.array(1.7)), "meta/epoch"),
    (_set("meta/epoch", np.array(99)), "meta/epoch"),
    (_set("meta/weight_grad", np.array("predicted")), "meta/weight_grad"),
    (_set("meta/dtype", np.array("float32")), "meta/dtype"),
    (lambda ck: ck.pop("optim/lr"), "optim/lr"),
    (_set("model/fc9.weight", np.zeros(3)), "model/fc9.weight"),
])
def test_checkpoint_entries_are_checked(run_dir, edit, named, capsys):
    path = run_dir / "checkpoint.npz"
    ck = load_checkpoint(path)
    edit(ck)
    save_checkpoint(path, ck)
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "checkpoint.npz", named)
    assert snapshot(run_dir) == before


# -- 5. the metrics history is never dropped -----------------------------------------------------

@pytest.mark.parametrize("damage", ["missing", "empty", "header", "one row"])
def test_lost_metrics_are_rebuilt_from_the_checkpoint(run_dir, damage, capsys):
    path = run_dir / "metrics.csv"
    good = path.read_text()
    {"missing": lambda: path.unlink(), "empty": lambda: path.write_text(""),
     "header": lambda: path.write_text(good.splitlines()[0] + "\n"),
     "one row": lambda: path.write_text("\n".join(good.splitlines()[:2]) + "\n")}[damage]()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert "rebuilt it from the history in" in capsys.readouterr().out
    assert path.read_text() == good


@pytest.mark.parametrize("garbage", ["epoch,loss\n1,abc\n", "\x00\xff garbage", "epoch,loss\n2,0.5\n"])
def test_garbage_metrics_are_refused(run_dir, garbage, capsys):
    (run_dir / "metrics.csv").write_text(garbage, errors="surrogateescape")
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "metrics.csv")
    assert snapshot(run_dir) == before


def test_contradicting_metrics_and_old_checkpoints_are_refused(run_dir, capsys):
    path = run_dir / "metrics.csv"
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = "0.123"                      # an edited value of epoch 2
    path.write_text("\n".join(lines[:2] + [",".join(cells)]) + "\n")
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "metrics.csv", "differs from the history")
    assert snapshot(run_dir) == before
    # A checkpoint without a history (older versions) with a short metrics.csv: refused.
    ck = {k: v for k, v in load_checkpoint(run_dir / "checkpoint.npz").items()
          if not k.startswith("history/")}
    save_checkpoint(run_dir / "checkpoint.npz", ck)
    path.write_text("\n".join(lines[:2]) + "\n")
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "metrics.csv", "1 epoch(s)", "epoch 2", "lose")
    assert snapshot(run_dir) == before


# -- 7. and 8. interruptions: stale temp files, SIGTERM, before the first checkpoint ---------------

def test_stale_temp_files_are_removed_and_others_kept(run_dir, capsys):
    stale = [run_dir / "checkpoint.npz.a1b2c3d4.tmp", run_dir / "metrics.csv.tmp",
             run_dir / "config.json.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    mine = run_dir / "checkpoint.npz.my-notes.tmp"
    mine.write_text("not ours")
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and mine.read_text() == "not ours"


def test_interrupted_before_the_first_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "early"
    real = Trainer.step

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", interrupted)
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 130
    err = capsys.readouterr().err
    assert f"--resume {out}" in err and "no epoch had finished" in err and "RUN_DIR" not in err
    monkeypatch.setattr(Trainer, "step", real)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert len(read_metrics(out / "metrics.csv")) == 1


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "dfbst_np", "train", "--epochs", "200", "--out", str(out), *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.csv").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)                 # waiting for the first epoch, not timing anything
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and f"--resume {out}" in err and "Traceback" not in err
    assert not list(out.glob("*.tmp"))
    done = len(read_metrics(out / "metrics.csv"))
    assert 1 <= done < 200
    r = subprocess.run([sys.executable, "-m", "dfbst_np", "train", "--resume", str(out),
                        "--epochs", str(done + 1), "--no-progress"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and len(read_metrics(out / "metrics.csv")) == done + 1


# -- 9. threads are recorded; another count on resume warns ------------------------------------

def test_threads_recorded_and_a_change_warns(run_dir, capsys):
    from dfbst_np.runtime import set_blas_threads
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1
    try:
        assert main(["train", "--resume", str(run_dir), "--threads", "2", "--no-progress"]) == 0
    finally:
        set_blas_threads(1)
    err = capsys.readouterr().err
    assert "warning" in err and "1 BLAS thread(s)" in err and "uses 2" in err and "differ" in err
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1


# -- the API validates the same values -------------------------------------------------------

def test_api_validates_configs(tmp_path):
    cfg = default_config(batch_size=0)
    with pytest.raises(ConfigError, match="batch_size must be an integer from 1 to"):
        Run(cfg, tmp_path / "x")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**dataclasses.asdict(default_config()), "test_batch_size": 0}))
    with pytest.raises(ConfigError, match=f"{path}: test_batch_size"):
        RunConfig.load(path)
    with pytest.raises(DfbstError, match="does not exist"):
        Run.resume(tmp_path / "nothing")
    data = load_data(default_config(train_limit=64, test_limit=10))
    with pytest.raises(ValueError, match="N = 0"):
        from dfbst_np.train.trainer import evaluate
        evaluate(Run(default_config(train_limit=64), tmp_path / "y", data=data).model,
                 data.test_x[:0], data.test_y[:0])
