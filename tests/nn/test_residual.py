import numpy as np
import pytest

from dfbst_np.nn import Linear
from dfbst_np.nn.activations import ReLU
from dfbst_np.nn.containers import Sequential
from dfbst_np.nn.residual import Residual
from tests.helpers import rel_err
from tests.nn.fd import assert_fd
from tests.nn.parity import TOL, load_into_torch, t64, torch, torch_param_grads


class TorchResidual(torch.nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def pair(projection: bool):
    """The same residual block in dfbst_np and in torch (float64, same weights)."""
    body = Sequential(Linear(4, 5, dtype=np.float64, rng=1), ReLU(np.float64),
                      Linear(5, 5 if projection else 4, dtype=np.float64, rng=2))
    tbody = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 5 if projection else 4))
    if projection:
        res = Residual(body, Linear(4, 5, bias=False, dtype=np.float64, rng=3))
        tres = TorchResidual(tbody, torch.nn.Linear(4, 5, bias=False))
    else:
        res, tres = Residual(body), TorchResidual(tbody)
    load_into_torch(tres, res)
    return res, tres


@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_names_match_torch(projection):
    res, tres = pair(projection)
    assert list(res.state_dict()) == list(tres.state_dict())
    assert [k for k, _ in res.named_children()] == (["body", "shortcut"] if projection else ["body"])
    assert res.body.name == "body"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_matches_torch_and_fd(projection, n, rng):
    res, tres = pair(projection)
    x = rng.standard_normal((n, 4))
    y = res.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = res.backward(dy)
    tx = t64(x, grad=True)
    ty = tres(tx)
    ty.backward(t64(dy))
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    tgrads = torch_param_grads(tres)
    assert set(res.grads) == set(tgrads)
    for k in tgrads:
        assert rel_err(res.grads[k], tgrads[k]) <= TOL, k
    assert_fd(res, x, rng)


def test_shapes_must_agree():
    res = Sequential(Residual(Linear(4, 5)))
    with pytest.raises(ValueError, match=r"0 \(Residual\).*\(2, 5\).*\(2, 4\)"):
        res.forward(np.zeros((2, 4), np.float32))


def test_only_modules():
    with pytest.raises(TypeError, match="Residual: shortcut"):
        Residual(ReLU(), np.tanh)
