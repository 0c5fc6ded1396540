"""gradcheck: finds a wrong backward, passes the engine's layers, leaves no trace."""
import numpy as np
import pytest

from dfbst_np.nn.gradcheck import GradcheckReport, gradcheck
from dfbst_np.nn.linear import Conv2d, Linear
from dfbst_np.nn.module import Module


class MatMul(Module):
    """y = x @ W.T, with an optionally wrong weight gradient."""

    def __init__(self, wrong=False, dtype=np.float64):
        super().__init__()
        self.wrong = wrong
        self._params["weight"] = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)

    def forward(self, x):
        self._cache = x
        return x @ self._params["weight"].T

    def backward(self, dy):
        x, self._cache = self._cache, None
        gw = dy.T @ x
        # The classic slip: forgetting to transpose is caught; so is a factor 2.
        self._grads["weight"] = 2 * gw if self.wrong else gw
        return dy @ self._params["weight"]


class Tanh(Module):
    def forward(self, x):
        self._cache = np.tanh(x)
        return self._cache

    def backward(self, dy):
        y, self._cache = self._cache, None
        return dy * (1 - y * y)


class Counted(Module):
    """Has a buffer that forward changes and a parameter forward ignores."""

    def __init__(self):
        super().__init__()
        self._params["scale"] = np.array([1.5, -0.5])
        self._params["unused"] = np.zeros(3)
        self._buffers["calls"] = np.zeros(())

    def forward(self, x):
        self._buffers["calls"] += 1
        self._cache = x
        return x * self._params["scale"]

    def backward(self, dy):
        x, self._cache = self._cache, None
        self._grads["scale"] = (dy * x).sum(axis=0)
        return dy * self._params["scale"]


class TwoLayer(Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(3)
        self.fc1 = Linear(6, 8, dtype=np.float64, rng=rng)
        self.act = Tanh()
        self.fc2 = Linear(8, 3, dtype=np.float64, rng=rng)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

    def backward(self, dy):
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))


def x_of(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def test_correct_backward_passes_and_wrong_one_fails():
    good = gradcheck(MatMul(), x_of((5, 4)))
    bad = gradcheck(MatMul(wrong=True), x_of((5, 4)))
    assert isinstance(good, GradcheckReport)
    assert good.max_error < 1e-8 and good.ok(1e-7)
    assert bad["weight"] > 0.5 and not bad.ok(1e-3)
    assert bad["input"] < 1e-8           # only the weight gradient is wrong
    assert set(bad.errors) == {"input", "weight"}


@pytest.mark.parametrize("layer, shape", [
    (Linear(7, 5, dtype=np.float64, rng=2), (4, 7)),
    (Linear(7, 5, bias=False, dtype=np.float64, rng=2), (4, 7)),
    (Conv2d(2, 3, 3, stride=1, padding=1, dtype=np.float64, rng=2), (2, 2, 5, 5)),
    (Conv2d(3, 4, (3, 2), stride=2, padding=0, bias=False, dtype=np.float64, rng=2), (2, 3, 7, 6)),
], ids=["linear", "linear-nobias", "conv-pad", "conv-stride"])
def test_engine_layers_pass(layer, shape):
    report = gradcheck(layer, x_of(shape))
    assert set(report.errors) == {"input"} | set(layer.params)
    assert report.max_error < 1e-7, str(report)


def test_whole_model_with_dotted_names_and_custom_loss():
    model = TwoLayer()

    def half_squares(y):                      # f = sum(y^2) / 2, df/dy = y
        return 0.5 * float(np.sum(y * y)), y.copy()

    report = gradcheck(model, x_of((4, 6)), loss_fn=half_squares)
    assert set(report.errors) == {"input", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert report.max_error < 1e-7, str(report)
    assert set(model.grads) == set(model.params)   # left with the analytic gradients


def test_only_listed_params_and_subsets_of_large_arrays():
    layer = Linear(30, 10, dtype=np.float64, rng=0)   # 300 weights
    report = gradcheck(layer, x_of((3, 30)), params=["weight"], max_entries=50, check_input=False)
    assert [r.name for r in report.rows] == ["weight"]
    assert report.rows[0].checked == 50
    assert report.max_error < 1e-7
    again = gradcheck(layer, x_of((3, 30)), params=["weight"], check_input=False)
    assert again.errors == report.errors          # seeded: repeatable


def test_parameters_buffers_and_input_are_restored_bitwise():
    model = TwoLayer()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = x_of((4, 6))
    x0 = x.copy()
    gradcheck(model, x, eps=1e-3)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k]), k
    assert np.array_equal(x, x0)

    counted = Counted()
    report = gradcheck(counted, x_of((3, 2)))
    assert counted.buffers["calls"] == 0
    assert report["unused"] == 0.0                 # no gradient, and none numerically either
    assert not [r for r in report.rows if r.name == "unused"][0].has_grad
    assert report.max_error < 1e-8


def test_report_str_is_a_table():
    text = str(gradcheck(TwoLayer(), x_of((2, 6))))
    lines = text.splitlines()
    assert lines[0].startswith("gradcheck of TwoLayer")
    for name in ("input", "fc1.weight", "fc2.bias"):
        assert any(line.startswith(name) for line in lines)
    assert lines[-1].startswith("max error")


def test_float64_only_and_errors_named():
    with pytest.raises(TypeError, match="Linear.*'weight' is float32"):
        gradcheck(Linear(3, 2, dtype=np.float32), x_of((2, 3)).astype(np.float32))
    with pytest.raises(TypeError, match="MatMul.*input must be a float64"):
        gradcheck(MatMul(), x_of((2, 4)).astype(np.float32))
    with pytest.raises(KeyError, match="nope"):
        gradcheck(MatMul(), x_of((2, 4)), params=["nope"])


def test_does_not_import_torch():
    import dfbst_np.nn.gradcheck as mod
    assert "torch" not in open(mod.__file__).read()
