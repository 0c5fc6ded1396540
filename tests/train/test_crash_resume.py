"""kill -9 a training run at chosen points, inside the checkpoint write included, then
resume: no temporary file remains and the final metrics equal an uninterrupted run's.

The process kills itself with SIGKILL where ``DFBST_KILL_AT=point:n`` says
(:func:`dfbst_np.train.checkpoint.kill_point`), so every point is hit
exactly, without timing. Points: ``step`` (before the n-th training step),
``checkpoint-opened`` (the temporary file exists, empty),
``checkpoint-written`` (complete but not yet renamed), ``checkpoint-saved``
(renamed, metrics.csv not yet rewritten). 128 images, batch 64: 2 steps per
epoch, 3 epochs, float64.
"""
import signal

import pytest

from dfbst_np.train.run import read_metrics

from .folder_checks import train as _train

ARGS = ["--epochs", "3", "--train-limit", "128", "--test-limit", "50", "--dtype", "float64",
        "--no-progress"]


def _metrics(folder):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(folder / "metrics.csv")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    r = _train("--out", str(out), *ARGS)
    assert r.returncode == 0, r.stderr
    rows = _metrics(out)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    return rows


@pytest.mark.parametrize("kill_at", [
    "step:1",                   # before anything but config.json was written
    "step:4",                   # in epoch 2
    "checkpoint-opened:1",      # the first checkpoint's temporary file is empty
    "checkpoint-written:2",     # epoch 2's checkpoint complete, not renamed
    "checkpoint-saved:1",       # epoch 1's checkpoint in place, metrics.csv not yet written
    "checkpoint-saved:3",       # the last epoch: only metrics.csv was left to write
])
def test_kill_9_then_resume_equals_uninterrupted(kill_at, uninterrupted, tmp_path):
    out = tmp_path / "run"
    r = _train("--out", str(out), *ARGS, kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = _train("--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "config.json", "metrics.csv"]
    assert _metrics(out) == uninterrupted


def test_killed_twice_in_a_row(uninterrupted, tmp_path):
    """A resume killed inside its own checkpoint write, then resumed again."""
    out = tmp_path / "run"
    assert _train("--out", str(out), *ARGS, kill_at="checkpoint-written:2").returncode == -signal.SIGKILL
    r = _train("--resume", str(out), "--no-progress", kill_at="checkpoint-opened:1")
    assert r.returncode == -signal.SIGKILL
    assert list(out.glob("checkpoint.npz.*.tmp"))            # what a kill leaves...
    assert _train("--resume", str(out), "--no-progress").returncode == 0
    assert not list(out.glob("*.tmp"))                       # ...is gone after the resume
    assert _metrics(out) == uninterrupted
