"""gmp, set and rigl from the command line: target density, resume, refusals.

* each trains LeNet-300-100 and LeNet-5 on the committed sample (the first
  1,280 images, 2 epochs) and ends within 1.5 points of its target density
  (GMP: reached at update_end, however short the run);
* a run killed (kill -9, ``DFBST_KILL_AT``) after a topology update and
  resumed ends with exactly the metrics of an uninterrupted run (float64):
  the masks, seeds and schedule position come back from the checkpoint;
* a bad option value, an option of another method, and ``--backend torch``
  are refused in one line, exit 2.
"""
import signal
import subprocess
import sys

import numpy as np
import pytest

from dfbst_np.train.run import read_metrics
from dfbst_np.train.config import RunConfig

from tests.train.folder_checks import train as _train


def _metrics(folder):
    # V is NaN for these methods (they have no V): NaN != NaN, so it is compared as None
    return [{k: None if v != v else v for k, v in row.items() if k != "seconds"}
            for row in read_metrics(folder / "metrics.csv")]


@pytest.mark.parametrize("model", ["lenet300_100", "lenet_5"])
@pytest.mark.parametrize("method, density", [("gmp", 0.1), ("set", 0.064), ("rigl", 0.14)])
def test_trains_to_its_target_density(model, method, density, tmp_path):
    out = tmp_path / "run"
    r = _train("--model", model, "--method", method, "--density", str(density), "--epochs", "2",
               "--train-limit", "1280", "--test-limit", "200", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = read_metrics(out / "metrics.csv")
    assert abs(rows[-1]["density"] - density) <= 0.015, rows[-1]["density"]
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["test_acc"] > 0.05   # it trains
    cfg = RunConfig.load(out / "config.json")
    assert cfg.method == method and cfg.density == density
    assert f"{method}: density {density}" in r.stdout
    if method == "gmp":
        assert rows[0]["density"] > rows[-1]["density"]   # it started denser
        assert rows[-1]["bdensity"] == 1.0                 # and pays dense weight gradients
    else:
        assert abs(rows[0]["density"] - density) <= 0.015
        assert rows[-1]["flops_exact"] < 0.5


RESUME = {"rigl": ["--update-interval", "2", "--update-end", "0.9"],
          "set": ["--zeta", "0.5"],
          "gmp": ["--update-interval", "1", "--prune-start", "0.1", "--update-end", "0.8"]}


@pytest.mark.parametrize("method, kill_at", [("rigl", "step:4"), ("set", "checkpoint-saved:1"),
                                             ("gmp", "step:5")])
def test_killed_after_a_topology_update_then_resumed_equals_uninterrupted(method, kill_at, tmp_path):
    # 128 images, batch 64: 2 steps per epoch, 4 epochs. rigl updates after steps 2, 4, 6;
    # set before epochs 2, 3, 4; gmp prunes after steps 1 to 6 (end 0.8 of 8).
    args = ["--method", method, *RESUME[method], "--epochs", "4", "--train-limit", "128",
            "--test-limit", "50", "--dtype", "float64", "--no-progress"]
    full = tmp_path / "full"
    assert _train("--out", str(full), *args).returncode == 0
    expect = _metrics(full)
    assert len({round(row["test_loss"], 12) for row in expect}) == 4
    out = tmp_path / "run"
    r = _train("--out", str(out), *args, kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert len(read_metrics(out / "metrics.csv")) < 4          # it did not finish
    r = _train("--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert _metrics(out) == expect
    a, b = np.load(full / "checkpoint.npz"), np.load(out / "checkpoint.npz")
    assert sorted(a.files) == sorted(b.files) and any(k.startswith("method/keep.") for k in a.files)
    for key in a.files:
        if key.startswith(("model/", "optim/", "method/", "mask/")):   # not the wall times
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("args, message", [
    (["--method", "set", "--density", "0"], "--density must be a number in (0, 1], got 0.0"),
    (["--method", "set", "--density", "1.2"], "--density must be a number in (0, 1]"),
    (["--method", "rigl", "--zeta", "0.2"], "--zeta is not an option of method 'rigl'"),
    (["--method", "dfbst", "--density", "0.1"], "--density is not an option of method 'dfbst'"),
    (["--method", "gmp", "--update-interval", "0"], "--update-interval must be a positive integer"),
    (["--method", "gmp", "--prune-start", "0.9"], "--prune-start (0.9) must not come after"),
    (["--method", "rigl", "--drop-fraction", "2"], "--drop-fraction must be a number in [0, 1]"),
    (["--method", "rigl", "--backend", "torch"], "--method rigl has no PyTorch twin"),
    (["--method", "gmp", "--backend", "torch"], "--method gmp has no PyTorch twin"),
    (["--method", "set", "--backend", "torch"], "--method set has no PyTorch twin"),
])
def test_refused_in_one_line(args, message, tmp_path):
    out = tmp_path / "run"
    r = _train(*args, "--epochs", "1", "--train-limit", "64", "--out", str(out), "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert message in r.stderr, r.stderr
    assert not out.exists()


def test_a_resume_keeps_the_options_of_config_json(tmp_path):
    out = tmp_path / "run"
    assert _train("--method", "set", "--density", "0.2", "--epochs", "1", "--train-limit", "64",
                  "--test-limit", "20", "--out", str(out), "--no-progress").returncode == 0
    r = _train("--resume", str(out), "--density", "0.3", "--epochs", "2", "--no-progress")
    assert r.returncode == 2 and "--density 0.3 (config.json: 0.2)" in r.stderr


@pytest.mark.parametrize("command", [["check-grads", "--model", "lenet300_100"],
                                     ["verify", "--model", "x:y", "--step", "x:y"]])
def test_torch_commands_refuse_the_methods_without_a_twin(command):
    r = subprocess.run([sys.executable, "-m", "dfbst_np", *command, "--method", "rigl"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--method rigl has no PyTorch twin" in r.stderr and len(r.stderr.strip().splitlines()) == 1
