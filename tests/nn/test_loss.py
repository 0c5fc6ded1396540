import numpy as np
import pytest

from dfbst_np.nn.loss import CrossEntropyLoss
from tests.helpers import rel_err
from tests.nn.fd import numerical_grad
from tests.nn.parity import TOL, t64, torch


def torch_ce(logits, labels):
    tz = t64(logits, grad=True)
    loss = torch.nn.functional.cross_entropy(tz, torch.from_numpy(labels))
    loss.backward()
    return loss.item(), tz.grad.numpy()


@pytest.mark.parametrize("n, c, scale", [(1, 2, 1.0), (4, 10, 1.0), (7, 3, 5.0), (3, 5, 1e4), (2, 4, 1e-3)])
def test_matches_torch(n, c, scale, rng):
    logits = rng.standard_normal((n, c)) * scale
    labels = rng.integers(0, c, n)
    ce = CrossEntropyLoss(np.float64)
    loss = ce.forward(logits, labels)
    dz = ce.backward()
    tloss, tdz = torch_ce(logits, labels)
    assert type(loss) is float
    assert abs(loss - tloss) <= TOL * max(abs(tloss), 1e-300)
    assert rel_err(dz, tdz) <= TOL


@pytest.mark.parametrize("n, c", [(1, 3), (4, 5)])
def test_matches_finite_differences(n, c, rng):
    logits = rng.standard_normal((n, c))
    labels = rng.integers(0, c, n)
    ce = CrossEntropyLoss(np.float64)
    ce.forward(logits, labels)
    dz = ce.backward()
    numeric = numerical_grad(lambda: ce.forward(logits, labels), logits)
    assert rel_err(dz, numeric) <= 1e-7


def test_gradient_is_softmax_minus_onehot_over_n(rng):
    logits = rng.standard_normal((3, 4))
    labels = np.array([0, 3, 1])
    ce = CrossEntropyLoss(np.float64)
    ce.forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(ce.backward(), (p - np.eye(4)[labels]) / 3, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_do_not_overflow(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], dtype=dtype)
    labels = np.array([1, 2])
    ce = CrossEntropyLoss(dtype)
    with np.errstate(all="raise"):
        loss = ce.forward(logits, labels)
        dz = ce.backward()
    assert loss == pytest.approx((1e4 + np.log(2)) / 2, rel=1e-6)
    assert np.isfinite(dz).all() and dz.dtype == dtype
    np.testing.assert_allclose(dz, [[0.5, -0.5, 0], [0, 0.25, -0.25]], atol=1e-6)


def test_float32_close_to_torch(rng):
    logits = rng.standard_normal((6, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, 6)
    ce = CrossEntropyLoss()
    loss = ce.forward(logits, labels)
    tloss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    assert loss == pytest.approx(tloss.item(), rel=1e-6)


def test_non_finite_loss_raises_naming_the_loss():
    # Logits spanning more than float32's range: the shifted logit is -inf.
    logits = np.array([[3e38, -3e38]], np.float32)
    with pytest.raises(FloatingPointError, match=r"CrossEntropyLoss: loss contains inf"):
        CrossEntropyLoss().forward(logits, np.array([1]))


@pytest.mark.parametrize("logits, labels, error, fragment", [
    (np.zeros((2, 3)), np.array([0, 1]), TypeError, "dtype float32"),
    (np.zeros(3, np.float32), np.array([0]), ValueError, "rank 2"),
    (np.array([[np.nan, 0]], np.float32), np.array([0]), FloatingPointError, "NaN"),
    (np.zeros((2, 3), np.float32), np.array([0.0, 1.0]), TypeError, "integer dtype"),
    (np.zeros((2, 3), np.float32), np.array([True, False]), TypeError, "integer dtype"),
    (np.zeros((2, 3), np.float32), [0, 1], TypeError, "numpy.ndarray"),
    (np.zeros((2, 3), np.float32), np.array([0, 1, 2]), ValueError, "shape (2,)"),
    (np.zeros((2, 3), np.float32), np.array([[0], [1]]), ValueError, "shape (2,)"),
    (np.zeros((2, 3), np.float32), np.array([0, 3]), ValueError, "[0, 3)"),
    (np.zeros((2, 3), np.float32), np.array([-1, 0]), ValueError, "[0, 3)"),
])
def test_rejects_bad_input_naming_the_loss(logits, labels, error, fragment):
    with pytest.raises(error, match="CrossEntropyLoss") as info:
        CrossEntropyLoss().forward(logits, labels)
    assert fragment in str(info.value)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="CrossEntropyLoss: backward called before forward"):
        CrossEntropyLoss().backward()


def test_backward_consumes_the_cache(rng):
    ce = CrossEntropyLoss(np.float64)
    ce(rng.standard_normal((2, 3)), np.array([0, 2]))       # __call__ takes both arguments
    ce.backward()
    with pytest.raises(RuntimeError):
        ce.backward()
