r"""MaskedLinear and MaskedConv2d: an engine layer plus the mask rule.

The engine's Linear and Conv2d route their weight through two hooks,
``_weight_product`` (forward) and ``_weight_product_backward``. A masked
layer overrides exactly those two, so the rule below is written once for
both layer kinds: a conv weight is the (out, in*kh*kw) matrix W here.

Forward:   M = H(|W| - tau),  W_hat = W * M,  Y2 = X2 W_hat^T   (sparse kernel)
Backward:  A = dY2^T X2,  dX2 = dY2 W_hat,  (dW, dt) = layer_grads(A, ...)

``method="dense"`` is the plain engine layer: no threshold, no mask.

Weight gradient: exact or predicted
-----------------------------------
``weight_grad="exact"`` (the default) is the paper's algorithm: the full
A = dY2^T X2 is computed, because D is defined from the dense gradient's row
norms. ``weight_grad="predicted"`` (method ``dfbst`` only) is an
**approximation** of it, DFBST's accelerated mode: A is computed only on a
predicted support

.. math:: S = M_k \cup D_{k-1}

(this step's forward mask and the layer's last backward mask), by a sampled
dense-dense product that never forms the full A
(:func:`~dfbst_np.sparse.kernels.sampled_product_csr`), and everything after
it runs on S's entries only. It deviates from the paper in exactly these
ways:

* entries of A outside S are not computed and count as 0: dW = 0 there, so
  a weight outside M and outside the last D gets no gradient (in the paper
  every weight with h(z) != 0 gets one, which is how pruned weights regrow;
  here they can come back only through the forward thresholds t moving);
* dt_i = -s(t_i) sum_{j in S_i} A_ij W_ij h(z_ij): the sum runs over S;
* the backward mask normalises each row over S,
  Ghat_ij = dW_ij / sum_{j in S_i} |dW_ij|, and D = H(|Ghat| - u_i) is taken
  on S (so D_k is a subset of S_k and 0 elsewhere);
* V is the std of g = dW * D over all entries of all layers (zeros off S
  included, as the exact mode counts D's zeros), and dV/du_i sums over S;
* the first step (no previous D: a new layer, or after loading weights
  without a backward mask) is the exact step.

With S = everything (a previous D of all ones) the predicted step is the
exact step (up to summation order). Its accuracy cost against the exact
mode is measured in the README (LeNet-300-100 and LeNet-5 on Fashion-MNIST).

What each step keeps
--------------------
The forward keeps |W|, tau and M as booleans (z = |W| - tau and the float
M of the ``mask`` attribute are made when read); a sparse path builds CSR arrays of
W_hat once per forward and reuses their structure when M did not change
(as in evaluation, where the whole mask is also reused while W and t are
unchanged). A predicted layer makes S in its training forward and takes M's
sparse structure from it (a subset of S's entries), so that one pass over
the mask finds both. A trainer that does not need the gradient of a layer's input
(the first layer of a network) sets ``input_grad = False`` for the step and
the backward-data product is skipped. MaskedConv2d is the engine's Conv2d
(the transposed layout of :mod:`dfbst_np.nn.fast_im2col`) with these hooks.
"""
from __future__ import annotations

import numpy as np

from ..nn.linear import Conv2d, Linear
from . import kernels
from .. import textbook as tb
from .entries import Entries, Pattern
from .mask_rule import forward_mask, layer_grads
from .step import get_estimator

METHODS = ("dense", "dst", "dfbst")
WEIGHT_GRADS = ("exact", "predicted")


class MaskedLayer:
    """The mask rule, mixed into Linear and Conv2d (see the module docstring).

    Attributes
    ----------
    method : "dense", "dst" or "dfbst".
    weight_grad : "exact" or "predicted" (see the module docstring).
    mask : M of the last forward, shaped like W, in W's dtype (None for dense).
    dmask : D of the last backward mask, shaped like W, in W's dtype (made
        from :attr:`backward_mask` when read; assigning an array sets it).
    backward_mask : D as a :class:`~dfbst_np.sparse.entries.Pattern`, or None.
    kernel_path : "dense", "sparse", "auto" or None (None: the global default).
    rows : rows of X2 in the last forward (batch, times positions for conv),
        the N of the cost ledger.
    input_grad : bool
        Whether backward computes dL/dx (True); a trainer sets False for a
        step when nothing needs it, and backward then returns a read-only
        view of zeros.
    defer_weight_grad : bool
        False: backward writes ``grads["weight"]`` (always, in the exact mode).
        A trainer that applies D itself sets True for the step: a predicted
        gradient is then not written densely, and the trainer hands the
        gradient to use back with :meth:`set_used_grad`.
    textbook : bool
        Run the forward mask and the gradient rule through
        :mod:`dfbst_np.textbook` with dense products (same numbers, slower;
        the exact weight gradient only).
    last_weight_grad : "exact" or "predicted": what the last backward did.

    Per step, a trainer calls ``forward``, ``backward``, then
    :meth:`loss_grad` (dW before D), :meth:`set_backward_mask` (D) and
    :meth:`set_used_grad` (dW * D after clipping).
    """

    def _init_mask(self, method: str, estimator: str, float32_masks: bool, kernel_path,
                   weight_grad: str = "exact") -> None:
        if method not in METHODS:
            raise ValueError(f"{type(self).__name__}: unknown method {method!r}; "
                             f"expected one of {METHODS}")
        if weight_grad not in WEIGHT_GRADS:
            raise ValueError(f"{type(self).__name__}: unknown weight_grad {weight_grad!r}; "
                             f"expected one of {WEIGHT_GRADS}")
        if weight_grad == "predicted" and method != "dfbst":
            raise ValueError(f"{type(self).__name__}: weight_grad='predicted' needs a backward "
                             f"mask, i.e. method 'dfbst' (got {method!r})")
        self.method = method
        self.weight_grad = weight_grad
        self.estimator = get_estimator(estimator)
        self.float32_masks = bool(float32_masks)
        if kernel_path is not None and kernel_path not in kernels.PATHS:    # fail here, not in forward
            raise ValueError(f"{type(self).__name__}: kernel_path must be one of {kernels.PATHS} "
                             f"or None, got {kernel_path!r}")
        self.kernel_path = kernel_path
        out = self._params["weight"].shape[0]
        if method in ("dst", "dfbst"):
            self._params["threshold"] = np.zeros(out, dtype=self.dtype)
        if method == "dfbst":
            self._params["dthreshold"] = np.zeros(out, dtype=self.dtype)
        self._mask = self._dpattern = None
        self.rows = 0
        self.input_grad = True
        self.defer_weight_grad = False
        self.textbook = False
        self.last_weight_grad = None
        self._fmask = self._kernel = self._prev_kernel = None
        self._loss_grad = self._step_support = None
        self._eval_cache = None
        self._transposed = False

    # -- the per-step interface of a trainer ----------------------------------
    def loss_grad(self) -> Entries:
        """dL/dW of the last backward, before D, as (out, fan_in)
        :class:`~dfbst_np.sparse.entries.Entries`: the whole matrix (exact mode)
        or its values on the predicted support (0 elsewhere)."""
        if self._loss_grad is None:
            raise RuntimeError(f"{self.describe()}: no weight gradient: call backward first")
        return self._loss_grad

    def set_backward_mask(self, D) -> None:
        """Record D of this step: a :class:`~dfbst_np.sparse.entries.Pattern`, or None."""
        if D is not None and not isinstance(D, Pattern):
            raise TypeError(f"{self.describe()}: set_backward_mask takes a Pattern or None, "
                            f"got {type(D).__name__}")
        self._dpattern = D

    def set_used_grad(self, g: Entries) -> None:
        """The weight gradient the optimiser applies (dW * D, clipped), written densely."""
        self._grads["weight"] = g.dense().reshape(self.weight.shape)

    # -- masks as attributes -------------------------------------------------
    @property
    def mask(self):
        if self._mask is None and self._fmask is not None:
            self._mask = self._fmask.M.reshape(self.weight.shape)
        return self._mask

    @mask.setter
    def mask(self, value) -> None:
        self._mask = value
        if value is None:
            self._fmask = None

    @property
    def backward_mask(self):
        """D of the last backward mask as a Pattern, or None."""
        return self._dpattern

    @property
    def dmask(self):
        if self._dpattern is None:
            return None
        return self._dpattern.dense(self.dtype).reshape(self.weight.shape)

    @dmask.setter
    def dmask(self, value) -> None:
        self._dpattern = None if value is None else Pattern(keep=np.asarray(value).reshape(
            np.shape(value)[0], -1) != 0)

    def _has_previous_mask(self) -> bool:
        """Whether a backward mask of W's current shape is known."""
        return self._dpattern is not None and self._dpattern.shape == self.weight2d.shape

    @property
    def density(self) -> float:
        """Fraction of weights the last forward used (1.0 for dense)."""
        return self.mask_nnz / self.weight.size

    @property
    def mask_nnz(self) -> int:
        """nnz(M) of the last forward (numel for dense)."""
        if self._fmask is not None:
            return self._fmask.nnz
        return self.weight.size if self._mask is None else int(np.count_nonzero(self._mask))

    @property
    def dmask_nnz(self):
        """nnz(D) of the last backward mask, or None when there is none."""
        return None if self._dpattern is None else self._dpattern.nnz

    # -- forward -------------------------------------------------------------
    def _forward_state(self, w2: np.ndarray, transposed: bool):
        """This forward's ForwardMask and kernel; in evaluation both are reused
        while W and t are unchanged (compared with a snapshot, one pass)."""
        t = self._params["threshold"]
        cache = self._eval_cache
        key = (self.kernel_path, kernels.get_default_path(), transposed)
        if (not self.training and cache is not None and cache[0] == key
                and np.array_equal(cache[1], t) and np.array_equal(cache[2], w2)):
            return cache[3], cache[4]
        fm = forward_mask(w2, t, self.method)
        self._step_support = m_support = None
        if self.training and self.weight_grad == "predicted" and self._has_previous_mask():
            # This step's S = M | D_prev, made here so that M's sparse structure is
            # taken from it (no second pass over W to find M's entries).
            S = self._step_support = self._predicted_support(fm.keep)
            m_support = lambda: S.subset(fm.keep.reshape(-1).take(S.flat))
        kernel = kernels.prepare_weight(None, path=self.kernel_path, weight=w2, pattern=fm.keep,
                                        nnz=fm.nnz, products=2 if self.input_grad else 1,
                                        previous=self._prev_kernel, transposed=transposed,
                                        support=m_support)
        if self.training or fm.reset:
            self._eval_cache = None
        else:
            self._eval_cache = (key, t.copy(), w2.copy(), fm, kernel)
        return fm, kernel

    def _weight_product(self, x2: np.ndarray, transposed: bool = False) -> np.ndarray:
        """Y2 = X2 W_hat^T with W_hat = W * M (or Y2^T = W_hat X2^T); keeps M and the
        kernel for the backward."""
        return self._masked_product(x2, transposed)

    def _masked_product(self, x2: np.ndarray, transposed: bool) -> np.ndarray:
        """Y2 = X2 W_hat^T, or Y2^T = W_hat X2^T for an X2^T (fan_in, rows) when ``transposed``.

        Textbook twins: :func:`dfbst_np.textbook.forward_mask` and
        :func:`dfbst_np.textbook.masked_forward`."""
        self.rows = x2.shape[1] if transposed else x2.shape[0]
        self._transposed = transposed
        self._product_input = x2
        if self.textbook:
            return self._textbook_product(x2, transposed)
        if self.method == "dense":
            if not transposed:
                return super()._weight_product(x2)
            return kernels.dense_forward_t(self.weight2d, x2)
        w2 = self.weight2d
        self._fmask, self._kernel = self._forward_state(w2, transposed)
        self._mask = None
        y2 = self._kernel.forward_t(x2) if transposed else self._kernel.forward(x2)
        self._prev_kernel = self._kernel
        return y2

    def _textbook_product(self, x2: np.ndarray, transposed: bool) -> np.ndarray:
        """The forward through :mod:`dfbst_np.textbook`: M (with the reset), then X W_hat^T."""
        if self.method != "dense":
            t = self._params["threshold"]
            M, t_new = tb.forward_mask(self.weight2d, t, self.method)
            t[...] = t_new                    # the layer owns t: the reset rule writes it back
            self._mask = M.reshape(self.weight.shape)
        self._fmask = self._kernel = self._eval_cache = None
        X = x2.T if transposed else x2
        Y = tb.masked_forward(X, self.weight2d, self._textbook_M())
        return np.ascontiguousarray(Y.T) if transposed else Y

    def _textbook_M(self) -> np.ndarray:
        return np.ones_like(self.weight2d) if self.method == "dense" else self._mask.reshape(
            self.weight.shape[0], -1)

    # -- backward ------------------------------------------------------------
    def _predicted_support(self, keep: np.ndarray):
        """S = M | D_prev as a row-major :class:`~dfbst_np.sparse.kernels.Support`."""
        return kernels.support_structure(self._dpattern.union(keep))

    def _weight_product_backward(self, dy2: np.ndarray):
        """dX2 = dY2 W_hat (None when ``input_grad`` is False); grads of weight and threshold.

        In the transposed layout (``_masked_product(..., transposed=True)``) dy2
        is dY2^T (out, rows) and the result dX2^T (fan_in, rows).

        Textbook twins: :func:`dfbst_np.textbook.masked_backward` and
        :func:`dfbst_np.textbook.layer_grads`.
        """
        x2, tr = self._product_input, self._transposed
        self._product_input = None
        if self.textbook:
            return self._textbook_backward(dy2, x2, tr)
        w2 = self.weight2d
        if self.method == "dense":
            A = kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2)
            self._grads["weight"] = A.reshape(self.weight.shape)
            self._loss_grad = Entries(A)
            self.last_weight_grad = "exact"
            if not self.input_grad:
                return None
            return kernels.dense_backward_data_t(w2, dy2) if tr else kernels.dense_backward_data(dy2, w2)
        dx2 = None
        if self.input_grad:
            dx2 = self._kernel.backward_data_t(dy2) if tr else self._kernel.backward_data(dy2)
        support, self._step_support = self._step_support, None
        if support is not None:
            A = Entries(kernels.sampled_product_csr(dy2, x2, support, path=self.kernel_path,
                                                    transposed=tr), support)
            self.last_weight_grad = "predicted"
        else:
            # The exact algorithm needs the dense A: D is defined by dW's row sums.
            A = Entries(kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2))
            self.last_weight_grad = "exact"
        dW, dt = layer_grads(A, w2, self._params["threshold"], self._fmask, self.method,
                             self.estimator, self.float32_masks, overwrite_a=True)
        self._finish_backward(dW, dt)
        self._kernel = None
        return dx2

    def _finish_backward(self, dW: Entries, dt) -> None:
        self._loss_grad = dW
        if dW.full or not self.defer_weight_grad:
            self._grads["weight"] = dW.dense().reshape(self.weight.shape)
        else:
            self._grads.pop("weight", None)
        if dt is not None:
            self._grads["threshold"] = dt

    def _textbook_backward(self, dy2: np.ndarray, x2: np.ndarray, tr: bool):
        """The backward through :mod:`dfbst_np.textbook` (dense products, exact rule)."""
        dY, X = (dy2.T, x2.T) if tr else (dy2, x2)
        M, w2 = self._textbook_M(), self.weight2d
        A, dX = tb.masked_backward(dY, X, w2, M)
        t = self._params.get("threshold")
        dW, dt = tb.layer_grads(A, w2, t, M, self.method, self.float32_masks)
        self._finish_backward(Entries(dW), dt)
        self.last_weight_grad = "exact"
        if not self.input_grad:
            return None
        return np.ascontiguousarray(dX.T) if tr else dX


class MaskedLinear(MaskedLayer, Linear):
    """A linear layer with a learned forward mask (and, for dfbst, a backward threshold).

    Shapes: x (N, in), W (out, in), b (out,), t and u (out,), y (N, out).
    Parameters, in PyTorch's registration order: weight, bias, threshold (dst,
    dfbst), dthreshold (dfbst). ``weight_grad``: "exact" or "predicted"
    (the accelerated approximation, see :mod:`dfbst_np.sparse.masked`).
    """

    def __init__(self, in_features: int, out_features: int, method: str = "dfbst",
                 bias: bool = True, dtype=np.float32, rng=None, estimator: str = "long_tailed",
                 float32_masks: bool = False, kernel_path=None, weight_grad: str = "exact") -> None:
        Linear.__init__(self, in_features, out_features, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, estimator, float32_masks, kernel_path, weight_grad)

    def extra_repr(self) -> str:
        extra = f", weight_grad={self.weight_grad!r}" if self.weight_grad != "exact" else ""
        return super().extra_repr() + f", method={self.method!r}" + extra


class MaskedConv2d(MaskedLayer, Conv2d):
    """A 2-D convolution with the same mask rule, on W as an (out, in*kh*kw) matrix.

    Shapes: x (N, C_in, H, W), W (C_out, C_in, kh, kw), t and u (C_out,),
    y (N, C_out, OH, OW).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, bias: bool = True, method: str = "dfbst", dtype=np.float32,
                 rng=None, estimator: str = "long_tailed", float32_masks: bool = False,
                 kernel_path=None, weight_grad: str = "exact") -> None:
        Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                        padding=padding, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, estimator, float32_masks, kernel_path, weight_grad)

    def extra_repr(self) -> str:
        extra = f", weight_grad={self.weight_grad!r}" if self.weight_grad != "exact" else ""
        return super().extra_repr() + f", method={self.method!r}" + extra


def masked_layers(model):
    """(dotted name, layer) for every masked layer of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]
