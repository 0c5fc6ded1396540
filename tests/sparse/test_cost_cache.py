"""The cost model fitted to the machine: measured once, cached, a bad cache file measured again.

The measurement itself is replaced by a stub that counts its calls and returns
fixed costs, so nothing here depends on this machine's timings; the cache
folder is a tmp folder (XDG_CACHE_HOME). One test runs the real quick fit and
checks only that it gives usable costs.
"""
import dataclasses
import json

import numpy as np
import pytest

from dfbst_np.bench import crossover
from dfbst_np.sparse import cost_cache, costs
from dfbst_np.sparse.costs import BUILTIN, KernelCosts

FAKE = KernelCosts(dense_ns=0.02, sparse_ns=0.1, copy_ns=0.5, build_ns=0.2, build_nnz_ns=3.0,
                   call_us=10.0, sampled_ns=0.3, mask_ns=0.1, sampled_copy_ns=0.4,
                   sampled_call_us=2.0)


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """The measured model, a fresh cache folder, no costs in memory, a counting stub."""
    monkeypatch.setenv("DFBST_NP_COST_MODEL", "measured")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(costs, "COSTS", {})
    calls = []

    def fake(dtype):
        calls.append(np.dtype(dtype))
        return FAKE
    monkeypatch.setattr(crossover, "quick_costs", fake)
    return calls


def forget():
    costs.COSTS.clear()


def test_first_use_measures_and_writes_the_cache(measured, tmp_path):
    assert costs.costs_for(np.float32) == FAKE
    assert measured == [np.dtype(np.float32)]
    path = cost_cache.cache_path()
    assert path.parent == tmp_path / "dfbst_np" and path.exists()
    data = json.loads(path.read_text())
    assert data["key"] == cost_cache.machine_key()
    assert data["costs"]["float32"]["dense_ns"] == FAKE.dense_ns
    assert "written to" in costs.model_info(np.float32)["source"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]      # no temporary file left
    costs.costs_for(np.float32)                                         # in memory: no new measurement
    assert len(measured) == 1


def test_a_later_process_reads_the_cache(measured):
    costs.costs_for(np.float32)
    forget()                                     # as a new process would start
    assert costs.costs_for(np.float32) == FAKE
    assert len(measured) == 1
    assert "read from" in costs.model_info(np.float32)["source"]
    costs.costs_for(np.float64)                  # another dtype: measured and added to the file
    assert measured[-1] == np.dtype(np.float64)
    data = json.loads(cost_cache.cache_path().read_text())
    assert sorted(data["costs"]) == ["float32", "float64"]


@pytest.mark.parametrize("content", [
    "not json {", "", "[]", '{"format": 1}',
    "WRONG_KEY", "NEGATIVE", "MISSING_FIELD", "OTHER_FORMAT"])
def test_a_bad_cache_file_is_ignored_and_measured_again(measured, content):
    costs.costs_for(np.float32)
    path = cost_cache.cache_path()
    good = json.loads(path.read_text())
    if content == "WRONG_KEY":
        content = json.dumps(dict(good, key=dict(good["key"], cpu="another CPU")))
    elif content == "NEGATIVE":
        good["costs"]["float32"]["dense_ns"] = -1.0
        content = json.dumps(good)
    elif content == "MISSING_FIELD":
        del good["costs"]["float32"]["sparse_ns"]
        content = json.dumps(good)
    elif content == "OTHER_FORMAT":
        content = json.dumps(dict(good, format=cost_cache.FORMAT + 1))
    path.write_text(content)
    forget()
    assert costs.costs_for(np.float32) == FAKE
    assert len(measured) == 2                                    # measured again
    assert json.loads(path.read_text())["costs"]["float32"]["dense_ns"] == FAKE.dense_ns


def test_key_changes_with_the_machine():
    key = cost_cache.machine_key()
    assert set(key) == {"cpu", "blas", "numpy"} and key["numpy"] == np.__version__
    other = dict(key, blas="openblas 0.3.0 SkylakeX")
    assert cost_cache.cache_path(other) != cost_cache.cache_path(key)


def test_unwritable_cache_folder_keeps_the_costs_in_memory(measured, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert costs.costs_for(np.float32) == FAKE
    assert "not cached" in costs.model_info(np.float32)["source"]


def test_unusable_measurement_falls_back_to_builtin(measured, monkeypatch):
    monkeypatch.setattr(crossover, "quick_costs", lambda dtype: FAKE.__class__(
        **dict(FAKE.__dict__, dense_ns=0.0)))
    assert costs.costs_for(np.float32) == BUILTIN[np.dtype(np.float32)]
    assert "unusable" in costs.model_info(np.float32)["source"]
    assert not cost_cache.cache_path().exists()


def test_builtin_model_measures_nothing(measured, monkeypatch):
    monkeypatch.setenv("DFBST_NP_COST_MODEL", "builtin")
    assert costs.costs_for(np.float64) == BUILTIN[np.dtype(np.float64)]
    assert measured == [] and not cost_cache.cache_path().exists()
    assert costs.model_info(np.float64)["model"] == "builtin"


def test_unknown_model_is_refused_naming_the_variable(measured, monkeypatch):
    monkeypatch.setenv("DFBST_NP_COST_MODEL", "fastest")
    with pytest.raises(ValueError, match="DFBST_NP_COST_MODEL"):
        costs.costs_for(np.float32)


def test_relative_cache_home_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cost_cache.cache_dir() == tmp_path / ".cache" / "dfbst_np"


def test_the_quick_fit_gives_usable_costs():
    """The real measurement (a few seconds): finite, non-negative costs of every kind;
    no value is asserted (a fit on a loaded machine may drive a term to 0, and the
    model then falls back to the built-in costs, tested above)."""
    c = crossover.quick_costs(np.float64, repeat=1)
    assert isinstance(c, KernelCosts)
    values = [getattr(c, f) for f in KernelCosts.__dataclass_fields__]
    assert len(values) == 10 and all(np.isfinite(v) and v >= 0 for v in values)


# -- costs in force for a block (what a resumed run uses) -------------------------------------

def test_using_puts_costs_in_force_and_restores_what_was_there():
    f64, f32 = np.dtype(np.float64), np.dtype(np.float32)
    mine = dataclasses.replace(costs.BUILTIN[f64], sparse_ns=123.0)
    before = costs.in_use()
    with costs.using({f64: mine}):
        assert costs.costs_for(f64) is mine and costs.in_use()[f64] is mine
        assert costs.in_use().get(f32) == before.get(f32)      # another dtype: untouched
    assert costs.in_use() == before


def test_using_restores_after_an_exception_and_refuses_unusable_costs():
    f64 = np.dtype(np.float64)
    before = costs.in_use()
    with pytest.raises(ZeroDivisionError):
        with costs.using({f64: dataclasses.replace(costs.BUILTIN[f64], dense_ns=7.0)}):
            1 / 0
    assert costs.in_use() == before
    for bad in (dataclasses.replace(costs.BUILTIN[f64], dense_ns=0.0),
                dataclasses.replace(costs.BUILTIN[f64], copy_ns=float("nan")), "fast"):
        with pytest.raises(ValueError, match="valid KernelCosts"):
            with costs.using({f64: bad}):
                pass
    assert costs.in_use() == before


def test_to_array_and_back():
    c = dataclasses.replace(costs.BUILTIN[np.dtype(np.float32)], call_us=3.25)
    a = costs.to_array(c)
    assert a.dtype == np.float64 and a.shape == (len(dataclasses.fields(c)),)
    assert costs.from_array(a) == c
    for bad, says in ((a[:3], "10 floats"), (a.astype(np.int64), "10 floats"),
                      (-a, "non-negative")):
        with pytest.raises(ValueError, match=says):
            costs.from_array(bad)
