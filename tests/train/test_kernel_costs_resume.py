"""A resumed run chooses its kernels with the costs it recorded, not with this machine's cache.

The "auto" path picks dense or sparse products from kernel costs measured on
the machine (dfbst_np.sparse.cost_cache); the two give different last bits.
If the cache is measured again between a run's epochs (deleted, another
load), a resumed run must still compute the numbers of an uninterrupted one.
Here two sets of costs stand for two measurements: one that makes every
product sparse, one that makes every product dense.
"""
import dataclasses

import numpy as np
import pytest

from dfbst_np.cli import main
from dfbst_np.sparse import costs
from dfbst_np.train.checkpoint import load_checkpoint, save_checkpoint

from .folder_checks import SMALL

SPARSE = {dt: dataclasses.replace(c, sparse_ns=1e-6, copy_ns=0.0, build_ns=0.0, build_nnz_ns=0.0,
                                  call_us=0.0, dense_ns=10.0)
          for dt, c in costs.BUILTIN.items()}
DENSE = {dt: dataclasses.replace(c, sparse_ns=1e3, dense_ns=1e-6, mask_ns=0.0)
         for dt, c in costs.BUILTIN.items()}


def _train(out, epochs, measured, resume=False):
    # Fixed milestones: by default they scale with --epochs, which these runs extend.
    args = ["--resume", str(out)] if resume else ["--out", str(out), "--milestones", "10", *SMALL]
    with costs.using(measured):
        assert main(["train", *args, "--epochs", str(epochs)]) == 0


def _weights(out):
    return {k: v for k, v in load_checkpoint(out / "checkpoint.npz").items()
            if k.startswith(("model/", "optim/"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("costs")
    _train(root / "sparse", 2, SPARSE)
    _train(root / "mixed", 1, SPARSE)
    _train(root / "mixed_copy", 1, SPARSE)
    # What resuming did before the costs were recorded: epoch 2 chose by this machine's costs.
    _drop_costs(root / "mixed")
    _train(root / "mixed", 2, DENSE, resume=True)
    return root


def _drop_costs(out):
    ck = {k: v for k, v in load_checkpoint(out / "checkpoint.npz").items()
          if not k.startswith("costs/")}
    save_checkpoint(out / "checkpoint.npz", ck)


def test_the_checkpoint_records_the_costs_the_run_chose_by(runs):
    ck = load_checkpoint(runs / "sparse" / "checkpoint.npz")
    assert np.array_equal(ck["costs/float64"], costs.to_array(SPARSE[np.dtype(np.float64)]))


def test_resumed_under_other_costs_it_equals_the_uninterrupted_run(runs):
    _train(runs / "mixed_copy", 2, DENSE, resume=True)
    resumed, uninterrupted = _weights(runs / "mixed_copy"), _weights(runs / "sparse")
    assert resumed.keys() == uninterrupted.keys()
    for k in uninterrupted:
        assert np.array_equal(resumed[k], uninterrupted[k]), k
    ck = load_checkpoint(runs / "mixed_copy" / "checkpoint.npz")
    assert np.array_equal(ck["costs/float64"], costs.to_array(SPARSE[np.dtype(np.float64)]))


def test_premise_the_two_cost_models_give_different_numbers(runs):
    # Resumed without recorded costs, epoch 2 ran on dense products: other last bits.
    mixed, sparse = _weights(runs / "mixed"), _weights(runs / "sparse")
    assert any(not np.array_equal(mixed[k], sparse[k]) for k in sparse)


def test_the_costs_in_use_before_come_back_after_the_run(runs, tmp_path):
    before = costs.in_use()
    _train(runs / "sparse", 2, DENSE, resume=True)        # nothing left to train: pins and unpins
    assert costs.in_use() == before


def test_a_checkpoint_without_costs_resumes_with_this_machines(runs, tmp_path):
    import shutil
    out = tmp_path / "old"
    shutil.copytree(runs / "mixed_copy", out)
    _drop_costs(out)
    _train(out, 3, DENSE, resume=True)
    ck = load_checkpoint(out / "checkpoint.npz")
    assert np.array_equal(ck["costs/float64"], costs.to_array(DENSE[np.dtype(np.float64)]))


@pytest.mark.parametrize("bad, says", [
    (np.array([1.0, 2.0]), "shape (2,)"),
    (np.full(10, np.nan), "NaN"),
    (np.zeros(10), "positive"),
])
def test_unusable_recorded_costs_are_refused_in_one_line(runs, tmp_path, capsys, bad, says):
    import shutil
    out = tmp_path / "bad"
    shutil.copytree(runs / "mixed_copy", out)
    ck = load_checkpoint(out / "checkpoint.npz")
    ck["costs/float64"] = bad
    save_checkpoint(out / "checkpoint.npz", ck)
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "checkpoint.npz" in err and "costs/float64" in err \
        and says in err and "\n" not in err, err
