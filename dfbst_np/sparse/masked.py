r"""MaskedLinear and MaskedConv2d: an engine layer plus the mask rule.

The engine's Linear and Conv2d route their weight through two hooks,
``_weight_product`` (forward) and ``_weight_product_backward``. A masked
layer overrides exactly those two, so the rule below is written once for
both layer kinds: a conv weight is the (out, in*kh*kw) matrix W here.

Forward:   M = H(|W| - tau),  W_hat = W * M,  Y2 = X2 W_hat^T   (sparse kernel)
Backward:  A = dY2^T X2,  dX2 = dY2 W_hat,  (dW, dt) = masked_layer_grads(A, ...)

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
the backward-data product is skipped. MaskedConv2d runs its products in the
transposed layout of :mod:`dfbst_np.sparse.conv` (one column per output
position), the same numbers as the engine's Conv2d with cheaper copies and
sparse products without transposes.
"""
from __future__ import annotations

import numpy as np

from ..nn.checks import check_grad_output, check_input
from ..nn.linear import Conv2d, Conv2dCache, Linear
from . import kernels
from .backward_mask import SupportGrad
from .conv import BATCH_LAST_BELOW, col2im_t, from_output, im2col_t, to_output
from .fused import row_sums
from .mask_rule import forward_mask, masked_layer_grads, support_layer_grads
from .step import get_estimator

METHODS = ("dense", "dst", "dfbst")
WEIGHT_GRADS = ("exact", "predicted")


def _zeros_view(shape, dtype) -> np.ndarray:
    """A read-only array of zeros that costs no memory (what a skipped dx returns)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


class MaskedLayer:
    """The mask rule, mixed into Linear and Conv2d (see the module docstring).

    Attributes
    ----------
    method : "dense", "dst" or "dfbst".
    weight_grad : "exact" or "predicted" (see the module docstring).
    mask : M of the last forward, shaped like W, in W's dtype (None for dense).
    dmask : D of the last backward mask, shaped like W, in W's dtype (set by
        the trainer; kept as booleans, or for a predicted gradient as the
        positions of its ones, and made dense when read).
    kernel_path : "dense", "sparse", "auto" or None (None: the global default).
    rows : rows of X2 in the last forward (batch, times positions for conv),
        the N of the cost ledger.
    input_grad : bool
        Whether backward computes dL/dx (True); a trainer sets False for a
        step when nothing needs it, and backward then returns a read-only
        view of zeros.
    last_weight_grad : "exact" or "predicted": what the last backward did.
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
        self._mask = self._dmask = self._dkeep = self._dflat = None
        self._dnnz = None
        self.rows = 0
        self.input_grad = True
        self.last_weight_grad = None
        self._fmask = self._kernel = self._prev_kernel = None
        self._support_grad = self._step_support = None
        self._defer_weight_grad = False     # set by the trainer: it materialises dW * D itself
        self._eval_cache = None
        self._transposed = False

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
    def dmask(self):
        if self._dmask is None and self._dkeep is None and self._dflat is not None:
            keep = np.zeros(self.weight.size, dtype=bool)
            keep[self._dflat] = True
            self._dkeep = keep.reshape(self.weight2d.shape)
        if self._dmask is None and self._dkeep is not None:
            self._dmask = self._dkeep.astype(self.dtype).reshape(self.weight.shape)
        return self._dmask

    @dmask.setter
    def dmask(self, value) -> None:
        self._dmask, self._dkeep, self._dflat = value, None, None
        self._dnnz = None if value is None else int(np.count_nonzero(value))

    def set_backward_mask(self, keep: np.ndarray, nnz: int = None) -> None:
        """Record D of this step as an (out, fan_in) bool array (the trainer's call)."""
        self._dkeep, self._dmask, self._dflat = keep, None, None
        self._dnnz = int(np.count_nonzero(keep)) if nnz is None else int(nnz)

    def set_backward_support(self, flat: np.ndarray) -> None:
        """Record D of this step as the sorted row-major positions of its ones (the
        trainer's call for a predicted gradient: D lies inside the support, so this
        costs work in proportion to the support, not to W)."""
        self._dflat, self._dkeep, self._dmask = flat, None, None
        self._dnnz = int(flat.size)

    def _has_previous_mask(self) -> bool:
        """Whether a backward mask of W's current shape is known."""
        if self._dflat is not None:          # set by the trainer for these very weights
            return True
        if self._dkeep is None and self._dmask is not None:
            self._dkeep = (np.asarray(self._dmask) != 0).reshape(self.weight.shape[0], -1)
        return self._dkeep is not None and self._dkeep.shape == self.weight2d.shape

    @property
    def density(self) -> float:
        """Fraction of weights the last forward used (1.0 for dense)."""
        if self._fmask is not None:
            return self._fmask.nnz / self.weight.size
        return 1.0 if self._mask is None else float(np.count_nonzero(self._mask)) / self._mask.size

    @property
    def mask_nnz(self) -> int:
        """nnz(M) of the last forward (numel for dense)."""
        if self._fmask is not None:
            return self._fmask.nnz
        return self.weight.size if self._mask is None else int(np.count_nonzero(self._mask))

    @property
    def dmask_nnz(self):
        """nnz(D) of the last backward mask, or None when there is none."""
        if self._dnnz is None and self._dmask is not None:
            self._dnnz = int(np.count_nonzero(self._dmask))
        return self._dnnz

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

    def _weight_product(self, x2: np.ndarray) -> np.ndarray:
        """Y2 = X2 W_hat^T with W_hat = W * M; keeps M and the kernel for the backward."""
        return self._masked_product(x2, transposed=False)

    def _masked_product(self, x2: np.ndarray, transposed: bool) -> np.ndarray:
        """Y2 = X2 W_hat^T, or Y2^T = W_hat X2^T for an X2^T (fan_in, rows) when ``transposed``."""
        self.rows = x2.shape[1] if transposed else x2.shape[0]
        self._transposed = transposed
        if self.method == "dense":
            if not transposed:
                return super()._weight_product(x2)
            self._product_input = x2
            return kernels.dense_forward_t(self.weight2d, x2)
        self._product_input = x2
        w2 = self.weight2d
        self._fmask, self._kernel = self._forward_state(w2, transposed)
        self._mask = None
        y2 = self._kernel.forward_t(x2) if transposed else self._kernel.forward(x2)
        self._prev_kernel = self._kernel
        return y2

    # -- backward ------------------------------------------------------------
    def _predicted_support(self, keep: np.ndarray):
        """S = M | D_prev as a row-major :class:`~dfbst_np.sparse.kernels.Support`."""
        if self._dflat is not None:
            union = keep.copy()
            union.reshape(-1)[self._dflat] = True
        else:
            union = np.logical_or(keep, self._dkeep)
        return kernels.support_structure(union)

    def _weight_product_backward(self, dy2: np.ndarray):
        """dX2 = dY2 W_hat (None when ``input_grad`` is False); grads of weight and threshold.

        In the transposed layout (``_masked_product(..., transposed=True)``) dy2
        is dY2^T (out, rows) and the result dX2^T (fan_in, rows).
        """
        x2, tr = self._product_input, self._transposed
        if self.method == "dense":
            w = self._params["weight"]
            A = kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2)
            self._grads["weight"] = A.reshape(w.shape)
            self._product_input = None
            if not self.input_grad:
                return None
            if tr:
                return kernels.dense_backward_data_t(self.weight2d, dy2)
            return kernels.dense_backward_data(dy2, self.weight2d)
        dx2 = None
        if self.input_grad:
            dx2 = self._kernel.backward_data_t(dy2) if tr else self._kernel.backward_data(dy2)
        w2, t, fm = self.weight2d, self._params["threshold"], self._fmask
        support, self._step_support = self._step_support, None
        if support is not None:
            a_s = kernels.sampled_product_csr(dy2, x2, support, path=self.kernel_path, transposed=tr)
            values, dt = support_layer_grads(a_s, w2, t, fm, support, self.method,
                                             self.estimator, self.float32_masks)
            self._support_grad = SupportGrad(support, values)
            if self._defer_weight_grad:
                self._grads.pop("weight", None)
            else:
                self._grads["weight"] = self._support_grad.dense().reshape(self.weight.shape)
            self.last_weight_grad = "predicted"
        else:
            # The exact algorithm needs the dense A: D is defined by dW's row sums.
            A = kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2)
            dW, dt = masked_layer_grads(A, w2, t, fm, self.method, self.estimator,
                                        self.float32_masks, overwrite_a=True)
            self._grads["weight"] = dW.reshape(self.weight.shape)
            self._support_grad = None
            self.last_weight_grad = "exact"
        self._grads["threshold"] = dt
        self._product_input = self._kernel = None
        return dx2


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

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, out) -> dx (N, in); fills grads "weight" and "bias" (and "threshold")."""
        if self.input_grad:
            return Linear.backward(self, dy)
        check_grad_output(self, dy)
        if "bias" in self._params:
            self._grads["bias"] = dy.sum(axis=0)
        self._weight_product_backward(dy)
        self._cache = None
        return _zeros_view((dy.shape[0], self.in_features), self.dtype)

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

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C_in, H, W) -> y (N, C_out, OH, OW), in the transposed layout of
        :mod:`dfbst_np.sparse.conv` (same numbers as :class:`~dfbst_np.nn.linear.Conv2d`)."""
        check_input(self, x, (4,), self.dtype, {1: self.in_channels})
        n, _, oh, ow = y_shape = self.output_shape(x.shape)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.describe()}: input {x.shape} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        self._batch_last = ow < BATCH_LAST_BELOW
        cols_t = im2col_t(x, *self.kernel_size, self.stride, self.padding,
                          self._batch_last)                                  # (C*kh*kw, N*OH*OW)
        y2t = self._masked_product(cols_t, transposed=True)                  # (C_out, N*OH*OW)
        if "bias" in self._params:
            y2t += self._params["bias"][:, None]
        self._cache = Conv2dCache(x_shape=x.shape, y_shape=y_shape)
        return to_output(y2t, n, oh, ow, self._batch_last)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C_out, OH, OW) -> dx (N, C_in, H, W); fills grads "weight" and "bias".

        With ``input_grad`` False neither dX2 nor col2im is computed and a
        read-only view of zeros is returned.
        """
        check_grad_output(self, dy)
        dy2t = from_output(dy, self._batch_last)
        if "bias" in self._params:
            self._grads["bias"] = row_sums(dy2t)
        dcols_t = self._weight_product_backward(dy2t)
        x_shape = self._cache.x_shape
        self._cache = None
        if dcols_t is None:
            return _zeros_view(x_shape, self.dtype)
        return col2im_t(dcols_t, x_shape, *self.kernel_size, self.stride, self.padding,
                        self._batch_last)

    def extra_repr(self) -> str:
        extra = f", weight_grad={self.weight_grad!r}" if self.weight_grad != "exact" else ""
        return super().extra_repr() + f", method={self.method!r}" + extra


def masked_layers(model):
    """(dotted name, layer) for every masked layer of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]
