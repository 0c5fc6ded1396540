"""The torch backend of the run loop against the NumPy backend (dfbst_np/reference/backend.py).

What is proven, in float64 with the same seed and the same batches (the run
loop's): a run on ``--backend torch`` writes the metrics.csv of the NumPy run
(every column but seconds, to 1e-9 relative) and its checkpoint.npz (same
keys, dtypes and shapes; every array to 1e-9 relative; the masks M and D
identical), for LeNet-300-100 and LeNet-5 with dfbst, dst and dense over 2
epochs of 3 batches (the beta term, u's first update and a learning-rate
milestone inside), and for one short VGG-16 and ResNet-18 run on CIFAR-format
archives written here. A run started on one backend resumes on the other and
ends with the numbers of an uninterrupted run; a torch run's checkpoint loads
into a NumPy model that then scores the test accuracy the run recorded.

Measured (largest relative difference of any metric / checkpoint array):
LeNet-300-100 dfbst 1.1e-13 / 1.2e-13, LeNet-5 dfbst 4.4e-13 / 5.6e-13,
dst and dense <= 1e-15.
"""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dfbst_np import models
from dfbst_np.train.checkpoint import load_checkpoint, strip_prefix
from dfbst_np.train.config import default_config
from dfbst_np.train.data import datasets as ds
from dfbst_np.train.data.sources import RemoteFile, Source
from dfbst_np.train.run import Run, load_data, read_metrics
from dfbst_np.train.trainer import evaluate
from tests.train.test_data import cifar_members, md5, tar_gz

TOL = 1e-9
QUIET = dict(progress=False, log=lambda s: None)


def lenet_config(model="lenet300_100", method="dfbst", **kw):
    base = dict(dataset="sample", epochs=2, batch_size=16, train_limit=48, test_limit=50,
                milestones=(1,), dtype="float64")
    base.update(kw)
    return default_config(model, method, **base)


@pytest.fixture(scope="module")
def sample_data():
    return load_data(lenet_config())


def train(cfg, out, data, backend):
    cfg = dataclasses.replace(cfg, backend=backend)
    Run(cfg, out, data=data).train(**QUIET)
    return read_metrics(out / "metrics.csv"), load_checkpoint(out / "checkpoint.npz")


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(b), initial=0)))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b), initial=0)) / scale


def assert_same_metrics(rows_a, rows_b, tol=TOL):
    assert len(rows_a) == len(rows_b) > 0
    worst = 0.0
    for a, b in zip(rows_a, rows_b):
        assert list(a) == list(b)                      # the same columns, in the same order
        for key in a:
            if key == "seconds":
                continue
            if np.isnan(a[key]) or np.isnan(b[key]):
                assert np.isnan(a[key]) and np.isnan(b[key]), key
                continue
            err = rel(a[key], b[key])
            assert err <= tol, (a["epoch"], key, a[key], b[key])
            worst = max(worst, err)
    return worst


def assert_same_checkpoint(ck_a, ck_b, tol=TOL):
    # costs/: the NumPy backend's kernel costs (torch chooses no kernels; compared where kept)
    ck_a, ck_b = ({k: v for k, v in ck.items() if not k.startswith("costs/")} for ck in (ck_a, ck_b))
    assert sorted(ck_a) == sorted(ck_b)
    worst = 0.0
    for key in ck_a:
        a, b = ck_a[key], ck_b[key]
        assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
        if key == "totals/seconds":
            continue
        if a.dtype == bool or a.dtype.kind == "U":          # masks; meta/ and history/ names
            np.testing.assert_array_equal(a, b, err_msg=key)
            continue
        if key == "history/values":                         # the metrics rows, column by column
            for j, column in enumerate(ck_a["history/columns"].tolist()):
                if column != "seconds":
                    np.testing.assert_array_equal(np.isnan(a[:, j]), np.isnan(b[:, j]), err_msg=column)
                    assert rel(np.nan_to_num(a[:, j]), np.nan_to_num(b[:, j])) <= tol, column
            continue
        err = rel(a, b)
        assert err <= tol, (key, err)
        worst = max(worst, err)
    return worst


CASES = [(m, meth) for m in ("lenet300_100", "lenet_5") for meth in ("dfbst", "dst", "dense")]


@pytest.mark.parametrize("model,method", CASES)
def test_torch_run_equals_numpy_run(model, method, tmp_path, sample_data):
    cfg = lenet_config(model, method)
    rows_np, ck_np = train(cfg, tmp_path / "np", sample_data, "numpy")
    rows_t, ck_t = train(cfg, tmp_path / "torch", sample_data, "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["backend"] == "torch"
    m = assert_same_metrics(rows_np, rows_t)
    c = assert_same_checkpoint(ck_np, ck_t)
    print(f"\n{model}/{method}: metrics {m:.1e}, checkpoint {c:.1e}")

    # what the comparison covered
    assert len(rows_t) == 2 and rows_t[1]["lr"] == pytest.approx(cfg.lr * 0.1)
    assert any(k.startswith("optim/momentum_buffer.") for k in ck_t)
    if method == "dfbst":
        assert rows_t[1]["beta_term"] > 0 and 0 < rows_t[1]["bdensity"] < 1
        assert any(k.startswith("optim/momentum_buffer.") and k.endswith(".dthreshold") for k in ck_t)
    if method != "dense":
        assert any(k.startswith("mask/") for k in ck_t) and rows_t[1]["alpha_term"] > 0
    assert 0 < rows_t[1]["flops_exact"] <= 1 and 0 < rows_t[1]["flops_ideal"] <= 1


def test_torch_checkpoint_loads_into_a_numpy_model(tmp_path, sample_data):
    cfg = lenet_config("lenet_5", "dfbst")
    rows, ck = train(cfg, tmp_path / "torch", sample_data, "torch")
    model = models.build("lenet_5", method="dfbst", dtype=np.float64)
    model.load_state_dict(strip_prefix("model", ck))
    acc, loss = evaluate(model, sample_data.test_x, sample_data.test_y, cfg.test_batch_size)
    assert acc == rows[-1]["test_acc"]
    assert rel(loss, rows[-1]["test_loss"]) <= TOL


@pytest.mark.parametrize("first,second", [("numpy", "torch"), ("torch", "numpy")])
def test_resume_on_the_other_backend(first, second, tmp_path, sample_data):
    cfg = lenet_config("lenet300_100", "dfbst", epochs=3, milestones=(2,))
    rows_full, ck_full = train(cfg, tmp_path / "full", sample_data, first)
    half = dataclasses.replace(cfg, epochs=1)
    train(half, tmp_path / "switched", sample_data, first)
    run = Run.resume(tmp_path / "switched", data=sample_data, epochs=3, backend=second)
    assert run.epoch == 1 and run.cfg.backend == second
    run.train(**QUIET)
    assert json.loads((tmp_path / "switched" / "config.json").read_text())["backend"] == second
    rows = read_metrics(tmp_path / "switched" / "metrics.csv")
    assert_same_metrics(rows_full, rows)
    ck = load_checkpoint(tmp_path / "switched" / "checkpoint.npz")
    assert_same_checkpoint(ck_full, ck)
    # the NumPy backend's kernel costs: kept through a stretch on torch, never torch's own
    full_costs = {k: v for k, v in ck_full.items() if k.startswith("costs/")}
    costs = {k: v for k, v in ck.items() if k.startswith("costs/")}
    if first == "numpy":
        assert costs and costs.keys() == full_costs.keys()
        assert all(np.array_equal(costs[k], full_costs[k]) for k in costs)
    else:
        assert not full_costs and costs
    # the switch happened before u's first update and the lr milestone: both crossed it
    assert rows[1]["beta_term"] > 0 and rows[2]["lr"] == pytest.approx(cfg.lr * 0.1)


# -- VGG-16 and ResNet-18 on CIFAR-format archives written here ------------------------
def cifar_data(tmp_path, monkeypatch, dataset, n):
    name = "cifar-10-python.tar.gz" if dataset == "cifar10" else "cifar-100-python.tar.gz"
    data = tar_gz(cifar_members(dataset, n=n)[0])
    (tmp_path / name).write_bytes(data)
    monkeypatch.setitem(ds.SOURCES, dataset,
                        Source("", ds.SOURCES[dataset].mirrors, (RemoteFile(name, md5(data)),)))


@pytest.mark.parametrize("model,dataset", [("vgg16", "cifar10"), ("resnet18", "cifar100")])
def test_big_models_on_cifar_format_archives(model, dataset, tmp_path, monkeypatch):
    cifar_data(tmp_path, monkeypatch, dataset, n=8)
    cfg = default_config(model, "dfbst", dataset=dataset, data_root=str(tmp_path), epochs=1,
                         batch_size=4, train_limit=8, test_limit=4, dtype="float64")
    data = load_data(cfg)
    assert data.augment and data.train_x.shape == (8, 3, 32, 32)
    rows_np, ck_np = train(cfg, tmp_path / "np", data, "numpy")
    rows_t, ck_t = train(cfg, tmp_path / "torch", data, "torch")
    m = assert_same_metrics(rows_np, rows_t)
    c = assert_same_checkpoint(ck_np, ck_t)
    print(f"\n{model}: metrics {m:.1e}, checkpoint {c:.1e}")
    assert any(k.endswith("running_mean") for k in ck_t)        # BatchNorm's buffers compared too


# -- the command line --------------------------------------------------------------------
def test_cli_torch_run_resumed_on_numpy_then_plot(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "dfbst_np", "train", "--backend", "torch",
                        "--epochs", "1", "--train-limit", "64", "--test-limit", "50",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["backend"], cfg["device"], cfg["dtype"]) == ("torch", "cpu", "float32")
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck["model/fc1.weight"].dtype == np.float32
    r = subprocess.run([sys.executable, "-m", "dfbst_np", "train", "--resume", str(out), "--backend",
                        "numpy", "--epochs", "2", "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["backend"] == "numpy"
    assert [row["epoch"] for row in read_metrics(out / "metrics.csv")] == [1, 2]
    r = subprocess.run([sys.executable, "-m", "dfbst_np", "plot", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and (out / "density.png").stat().st_size > 1000


def test_cli_cuda_without_a_gpu_is_one_line_exit_2(tmp_path):
    # Whatever this machine has, the child sees no GPU.
    code = ("import sys, torch; torch.cuda.is_available = lambda: False; "
            "from dfbst_np.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "train", "--backend", "torch", "--device", "cuda",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "--device cuda" in r.stderr and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
