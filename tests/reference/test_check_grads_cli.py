"""``python -m dfbst_np check-grads``: the comparison helper behind it, and its exit status.

What is proven: the command, run as a user runs it, prints the table of
per-quantity errors and an OK verdict and exits 0 for LeNet-5 with dfbst;
when the NumPy side is made wrong on purpose (a layer's gradient rule
scaled by 1 + 1e-6, or the wrong straight-through estimator) the same
command reports a mismatch naming the wrong quantities and exits 1, as it
does when the tolerance is below float64 rounding. ``check_model`` judges
masks by identity and mathematically zero gradients (VGG's linear bias
before BatchNorm1d) by absolute error.
"""
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfbst_np.cli import main
from dfbst_np.reference.compare import Row, check_model, row_ok

# the modules themselves (dfbst_np.sparse re-exports functions under their names)
# (the fast gradient rule reaches the layers through the threshold methods' hooks)
masked = importlib.import_module("dfbst_np.methods.thresholds")
step = importlib.import_module("dfbst_np.sparse.step")

REPO = Path(__file__).resolve().parents[2]
ARGS = ["check-grads", "--model", "lenet_5", "--method", "dfbst"]


def test_command_passes_and_prints_the_table():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "dfbst_np"] + ARGS, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "max rel err" in out.splitlines()[0]
    for name in ("logits", "loss", "conv1.weight", "conv2.threshold", "fc4.bias", "fc3.mask"):
        assert name in out
    assert out.strip().splitlines()[-1].startswith("OK: check-grads lenet_5/dfbst")


def wrong_gradient_rule(monkeypatch):
    rule = masked.layer_grads

    def scaled(*args, **kwargs):
        dW, dt = rule(*args, **kwargs)
        return dW.like(dW.values * (1 + 1e-6)), dt

    monkeypatch.setattr(masked, "layer_grads", scaled)
    return ("weight",)


def wrong_estimator(monkeypatch):
    # the plain STE instead of DST's long-tailed one: dW and dt change
    monkeypatch.setitem(step.ESTIMATORS, "long_tailed", step.identity)
    return ("weight", "threshold")


@pytest.mark.parametrize("break_it", [wrong_gradient_rule, wrong_estimator])
def test_command_fails_on_a_wrong_gradient(monkeypatch, capsys, break_it):
    broken = break_it(monkeypatch)
    assert main(ARGS) == 1
    out = capsys.readouterr().out
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("MISMATCH: check-grads lenet_5/dfbst")
    for layer in ("conv1", "conv2", "fc3", "fc4"):
        for param in broken:
            assert f"{layer}.{param}" in verdict
    assert "bias" not in verdict and "logits" not in verdict


def test_command_fails_below_float64_rounding(capsys):
    assert main(ARGS + ["--tol", "1e-30"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["dense", "dst"])
def test_check_model_returns_true_and_prints(method):
    lines = []
    assert check_model("lenet300_100", method, batch_size=3, seed=2, printer=lines.append)
    assert len(lines) == 2 and "fc1.weight" in lines[0]
    assert lines[1].startswith(f"OK: check-grads lenet300_100/{method}")
    assert ("fc1.mask" in lines[0]) == (method == "dst")


def test_row_rules():
    zero = {"classifier.0.bias"}
    assert row_ok(Row("fc.weight", "grad", 1e-20, 1e-11), 1e-10)
    assert not row_ok(Row("fc.weight", "grad", 1e-20, 2e-10), 1e-10)
    assert not row_ok(Row("fc.weight", "grad", math.inf, math.inf), 1e-10)   # one side only
    assert not row_ok(Row("fc.weight", "grad", math.nan, math.nan), 1e-10)
    assert not row_ok(Row("fc.mask", "mask", 1.0, 1.0), 1.0)                 # masks: identical
    assert row_ok(Row("fc.mask", "mask", 0.0, 0.0), 1e-10)
    # a mathematically zero gradient: rounding noise over zero is fine, a real error is not
    assert row_ok(Row("classifier.0.bias", "grad", 2e-15, 3.0), 1e-10, zero)
    assert not row_ok(Row("classifier.0.bias", "grad", 1e-9, 3.0), 1e-10, zero)
    assert not row_ok(Row("classifier.0.bias", "grad", 2e-15, 3.0), 1e-10)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        check_model("lenet", "dfbst", printer=lambda s: None)
    np.testing.assert_equal(main(["check-grads", "--model", "lenet_5", "--method", "dfbst",
                                  "--batch-size", "0"]), 2)
