import numpy as np
import pytest

from dfbst_np.nn import Linear
from dfbst_np.nn.activations import ReLU
from dfbst_np.nn.containers import Sequential
from tests.helpers import rel_err
from tests.nn.fd import assert_fd
from tests.nn.parity import TOL, load_into_torch, t64, torch, torch_param_grads


def mlp(dtype=np.float64):
    return Sequential(Linear(4, 6, dtype=dtype, rng=1), ReLU(dtype), Linear(6, 3, dtype=dtype, rng=2))


def test_children_are_named_by_position():
    seq = mlp()
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2"]
    assert [seq[i].name for i in range(3)] == ["0", "1", "2"]
    assert len(seq) == 3
    assert seq[-1] is seq[2] and isinstance(seq[1], ReLU)
    assert list(seq) == [seq[0], seq[1], seq[2]]
    assert list(seq.params) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_indexing_errors():
    seq = mlp()
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="index with an int"):
        seq[0:2]


def test_only_modules():
    with pytest.raises(TypeError, match="Sequential: argument 1"):
        Sequential(ReLU(), np.tanh)


def test_forward_and_backward_chain(rng):
    seq = mlp()
    x = rng.standard_normal((5, 4))
    dy = rng.standard_normal((5, 3))
    h1 = seq[0].forward(x)
    h2 = seq[1].forward(h1)
    y_manual = seq[2].forward(h2)
    dx_manual = seq[0].backward(seq[1].backward(seq[2].backward(dy)))
    np.testing.assert_array_equal(seq.forward(x), y_manual)
    np.testing.assert_array_equal(seq.backward(dy), dx_manual)


def test_empty_sequential_is_the_identity(rng):
    x = rng.standard_normal((2, 3))
    seq = Sequential()
    assert len(seq) == 0
    assert seq.forward(x) is x and seq.backward(x) is x


def test_sequential_matches_finite_differences(rng):
    assert_fd(mlp(), rng.standard_normal((3, 4)), rng)


@pytest.mark.parametrize("n", [1, 5])
def test_sequential_matches_torch(n, rng):
    seq = mlp()
    tseq = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    load_into_torch(tseq, seq)
    x, dy = rng.standard_normal((n, 4)), rng.standard_normal((n, 3))
    y, dx = seq.forward(x), seq.backward(dy)
    tx = t64(x, grad=True)
    ty = tseq(tx)
    ty.backward(t64(dy))
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    tgrads = torch_param_grads(tseq)
    assert set(seq.grads) == set(tgrads)
    for k in tgrads:
        assert rel_err(seq.grads[k], tgrads[k]) <= TOL, k


def test_errors_inside_name_the_child():
    seq = Sequential(Linear(4, 6), ReLU(), Linear(5, 3))
    with pytest.raises(ValueError, match=r"^2 \(Linear\): expected size 5 on axis 1"):
        seq.forward(np.zeros((2, 4), np.float32))
