import numpy as np
import pytest

from dfbst_np.nn.batchnorm import BatchNorm1d, BatchNorm2d
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd
from tests.nn.parity import TOL, load_into_torch, t64, torch, torch_param_grads

# (class, input shape); a batch of 1 is fine in training when H*W > 1.
CASES = [
    (BatchNorm1d, (4, 3)),
    (BatchNorm1d, (5, 1)),
    (BatchNorm1d, (2, 3, 5)),          # (N, C, L)
    (BatchNorm2d, (2, 3, 4, 4)),
    (BatchNorm2d, (1, 2, 3, 5)),       # batch of 1, odd sizes
    (BatchNorm2d, (3, 4, 1, 1)),
]
IDS = [f"{cls.__name__}-{'x'.join(map(str, s))}" for cls, s in CASES]
TORCH = {BatchNorm1d: torch.nn.BatchNorm1d, BatchNorm2d: torch.nn.BatchNorm2d}


def randomised(cls, c, rng, **kwargs):
    """A float64 BN whose parameters and running statistics are not the defaults."""
    bn = cls(c, dtype=np.float64, **kwargs)
    bn.params["weight"][:] = rng.uniform(0.5, 1.5, c)
    bn.params["bias"][:] = rng.standard_normal(c)
    bn.buffers["running_mean"][:] = rng.standard_normal(c)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 2.0, c)
    return bn


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls, shape", CASES, ids=IDS)
def test_batchnorm_matches_finite_differences(cls, shape, training, rng):
    bn = randomised(cls, shape[1], rng).train(training)
    assert_fd(bn, rng.standard_normal(shape) * 2 + 1, rng)


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-3, "momentum": 0.3}])
@pytest.mark.parametrize("cls, shape", CASES, ids=IDS)
def test_batchnorm_matches_torch_over_three_steps_then_eval(cls, shape, kwargs, rng):
    c = shape[1]
    bn = randomised(cls, c, rng, **kwargs)
    tbn = TORCH[cls](c, **kwargs)
    load_into_torch(tbn, bn)
    for step in range(4):
        training = step < 3
        bn.train(training), tbn.train(training)
        x = rng.standard_normal(shape) * 3 + 2
        dy = rng.standard_normal(shape)
        y, dx = bn.forward(x), bn.backward(dy)
        tx = t64(x, grad=True)
        tbn.zero_grad()
        ty = tbn(tx)
        ty.backward(t64(dy))
        assert rel_err(y, ty.detach().numpy()) <= TOL, f"step {step}: y"
        assert rel_err(dx, tx.grad.numpy()) <= TOL, f"step {step}: dx"
        tgrads = torch_param_grads(tbn)
        assert list(bn.grads) == list(tgrads) == ["weight", "bias"]
        for name in tgrads:
            assert rel_err(bn.grads[name], tgrads[name]) <= TOL, f"step {step}: {name}"
        for name, tbuf in tbn.state_dict().items():
            ours = bn.state_dict()[name]
            if name == "num_batches_tracked":
                assert ours.dtype == np.int64 and ours.shape == ()
                assert int(ours) == int(tbuf) == min(step + 1, 3)
            else:
                assert rel_err(ours, tbuf.numpy()) <= TOL, f"step {step}: {name}"


def test_eval_mode_leaves_the_running_statistics_alone(rng):
    bn = randomised(BatchNorm2d, 3, rng).eval()
    before = bn.state_dict()
    bn.forward(rng.standard_normal((2, 3, 4, 4)))
    after = bn.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_buffers_are_updated_in_place(rng):
    bn = BatchNorm1d(3, dtype=np.float64)
    refs = dict(bn.buffers)
    bn.forward(rng.standard_normal((4, 3)))
    for k, v in bn.buffers.items():
        assert v is refs[k]
    assert int(bn.buffers["num_batches_tracked"]) == 1


@pytest.mark.parametrize("weight_init", [1.0, 0.5, 0.0])
def test_initial_state(weight_init):
    bn = BatchNorm2d(4, weight_init=weight_init)
    assert list(bn.state_dict()) == list(torch.nn.BatchNorm2d(4).state_dict())
    assert list(bn.params) == ["weight", "bias"]
    np.testing.assert_array_equal(bn.params["weight"], np.full(4, weight_init, np.float32))
    np.testing.assert_array_equal(bn.params["bias"], np.zeros(4, np.float32))
    np.testing.assert_array_equal(bn.buffers["running_mean"], np.zeros(4, np.float32))
    np.testing.assert_array_equal(bn.buffers["running_var"], np.ones(4, np.float32))
    assert bn.buffers["num_batches_tracked"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in bn.state_dict().items() if k != "num_batches_tracked")


def test_float32_close_to_torch_float32(rng):
    x = (rng.standard_normal((8, 5, 3, 3)) * 4 + 1).astype(np.float32)
    bn, tbn = BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    y = bn.forward(x)
    assert y.dtype == np.float32
    assert rel_err(y, tbn(torch.from_numpy(x)).detach().numpy()) <= 1e-5
    assert bn.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("cls, x, error, fragment", [
    (BatchNorm2d, np.zeros((2, 4, 3, 3), np.float32), ValueError, "size 3 on axis 1"),
    (BatchNorm2d, np.zeros((2, 3, 3), np.float32), ValueError, "rank 4"),
    (BatchNorm1d, np.zeros((2, 3, 3, 3), np.float32), ValueError, "rank 2 or 3"),
    (BatchNorm1d, np.zeros((2, 4), np.float32), ValueError, "size 3 on axis 1"),
    (BatchNorm1d, np.zeros((2, 3), np.int64), TypeError, "dtype float32"),
    (BatchNorm2d, np.full((2, 3, 2, 2), np.nan, np.float32), FloatingPointError, "NaN"),
    (BatchNorm1d, np.zeros((1, 3), np.float32), ValueError, "more than one value per channel"),
])
def test_batchnorm_rejects_bad_input_naming_the_layer(cls, x, error, fragment):
    bn = as_child(cls(3), "bn1")
    with pytest.raises(error, match=rf"bn1 \({cls.__name__}\)") as info:
        bn.forward(x)
    assert fragment in str(info.value)


def test_batch_of_one_is_fine_in_eval(rng):
    bn = BatchNorm1d(3).eval()
    assert bn.forward(rng.standard_normal((1, 3)).astype(np.float32)).shape == (1, 3)


def test_bad_momentum():
    with pytest.raises(ValueError, match="BatchNorm1d: momentum"):
        BatchNorm1d(3, momentum=1.5)
