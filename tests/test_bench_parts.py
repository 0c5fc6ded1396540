"""The bench's time per part: a wrapped implementation object, no patched private names.

The parts are timed on a twin whose model is built with the method's
implementation wrapped (dfbst_np.bench.parts.timed_implementation). What is
checked: the twin computes exactly what the plain model computes; every
part that the step runs gets time and the mask work is 0 for a dense model;
a part timed inside another is not counted twice; everything wrapped is
restored afterwards. No time is compared with any figure.
"""
import numpy as np
import pytest

from dfbst_np import methods
from dfbst_np.bench import parts as P
from dfbst_np.bench import variants as V
from dfbst_np.sparse import kernels


@pytest.fixture(scope="module")
def data():
    return V.batch_data(8)


@pytest.mark.parametrize("method,weight_grad", [("dfbst", "exact"), ("dfbst", "predicted"),
                                                ("dst", "exact"), ("dense", "exact")])
def test_the_twin_computes_what_the_variant_computes(data, method, weight_grad):
    v = V.numpy_variant("lenet300_100", method, "auto", 0.1, 8, data, weight_grad)
    twin = v.twin()
    assert type(twin.trainer.impl).__name__.startswith("Timed")
    assert isinstance(twin.trainer.impl, type(v.trainer.impl))
    assert twin.trainer.impl.method is v.trainer.impl.method
    P.part_times(twin, 2)                        # timing changes nothing either
    v.restore()
    twin.restore()
    ours = [v.step().loss for _ in range(3)]
    theirs = [twin.step().loss for _ in range(3)]
    assert ours == theirs
    for (_, a), (_, b) in zip(v.trainer.layers, twin.trainer.layers):
        np.testing.assert_array_equal(a.weight, b.weight)


def test_every_part_gets_time(data):
    dfbst = P.part_times(V.numpy_variant("lenet300_100", "dfbst", "auto", 0.1, 8, data).twin(), 2)
    assert set(dfbst) == set(P.PARTS)
    assert all(dfbst[k] > 0 for k in ("forward", "backward_data", "weight_grad", "masks", "optimiser"))
    dense = P.part_times(V.numpy_variant("lenet300_100", "dense", "-", 1.0, 8, data).twin(), 2)
    assert dense["forward"] > 0 and dense["weight_grad"] > 0 and dense["optimiser"] > 0


def test_parts_are_exclusive():
    timer = P.PartTimer()
    timer.active = True
    import time

    def inner():
        time.sleep(0.02)

    def outer():
        timer.call("masks", inner)
    timer.call("forward", outer)
    assert timer.acc["masks"] >= 0.02
    assert timer.acc["forward"] < timer.acc["masks"]            # the inner part is not in it


def test_everything_wrapped_is_restored(data):
    v = V.numpy_variant("lenet300_100", "dfbst", "auto", 0.1, 8, data)
    twin = v.twin()
    before = {name: getattr(kernels, name) for name in P.KERNEL_PARTS}
    P.part_times(twin, 1)
    assert {name: getattr(kernels, name) for name in P.KERNEL_PARTS} == before
    assert "step" not in vars(twin.trainer.optimizer)
    assert twin.timer.active is False
    impl = methods.implementation("dfbst")
    assert type(impl).__name__ == "FastDFBST"                   # the registry's object untouched
