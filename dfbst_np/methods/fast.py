r"""The fast implementation's layer hooks: masked products on CSR kernels.

Forward:   M from the method's rule,  W_hat = W * M,  Y2 = X2 W_hat^T   (sparse kernel)
Backward:  A = dY2^T X2 (on every entry, on M's, or on a predicted support),
           dX2 = dY2 W_hat,  (dW, grads) = the method's gradient rule on A's entries.

A method subclasses :class:`FastRule` and supplies two small hooks,
``forward_mask(layer, w2) -> ForwardMask`` and ``grads(layer, A, fm) ->
(dW, {param: grad})``; everything else (the kernels, their reuse, the
weight-gradient modes) is written once here.

Weight gradient: exact or predicted
-----------------------------------
The exact mode computes the full A = dY2^T X2, because DFBST's D is defined
from the dense gradient's row norms. The predicted mode (DFBST's
accelerated **approximation**) computes A only on

.. math:: S = M_k \cup D_{k-1}

(this step's forward mask and the layer's last backward mask), by a sampled
dense-dense product that never forms the full A
(:func:`~dfbst_np.sparse.kernels.sampled_product_csr`); the rule then runs on
S's entries only. It deviates from the paper in exactly these ways:

* entries of A outside S are not computed and count as 0: dW = 0 there, so
  a weight outside M and outside the last D gets no gradient (in the paper
  every weight with h(z) != 0 gets one, which is how pruned weights regrow;
  here they can come back only through the forward thresholds t moving);
* dt_i = -s(t_i) sum_{j in S_i} A_ij W_ij h(z_ij): the sum runs over S;
* the backward mask normalises each row over S and D is taken on S;
* V is the std of g = dW * D over all entries of all layers (zeros off S
  included), and dV/du_i sums over S;
* the first step (no previous D) is the exact step.

With S = everything the predicted step is the exact step (up to summation
order). The "mask" mode is the same product on S = M: the gradient of the
kept weights only (as SET and RigL train between topology updates).

What each step keeps: the forward keeps |W|, tau and M as booleans; a sparse
path builds CSR arrays of W_hat once per forward and reuses their structure
when M did not change (in evaluation the whole mask is reused while W and
the mask's inputs are unchanged). A predicted layer makes S in its training
forward and takes M's sparse structure from it, so that one pass over the
mask finds both.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..runtime import matmul
from ..sparse import kernels
from ..sparse.entries import Entries
from ..sparse.mask_rule import ForwardMask
from .base import Backward, Implementation, StepPlan


class FastState:
    """A layer's scratch between its forward and backward (the fast implementation's)."""

    def __init__(self) -> None:
        self.fmask = self.kernel = self.prev_kernel = None
        self.support = None            # this step's S (predicted or mask mode)
        self.eval_cache = None
        self.mode = None               # this step's weight-gradient mode
        self.M = None                  # the float M, made when read


class FastRule(Implementation):
    """The layer hooks of the fast implementation (see the module docstring).

    A subclass for a masked method supplies :meth:`forward_mask`, :meth:`grads`
    and, when the mask depends on arrays other than W, :meth:`mask_inputs`.
    """

    kind = "fast"

    # -- what a method supplies -------------------------------------------------
    def forward_mask(self, layer, w2: np.ndarray) -> ForwardMask:  # pragma: no cover - abstract
        """This forward's mask M of W (a :class:`~dfbst_np.sparse.mask_rule.ForwardMask`)."""
        raise NotImplementedError

    def grads(self, layer, A: Entries, fm: ForwardMask) -> Tuple[Entries, Dict[str, np.ndarray]]:
        """dL/dW and the method's parameter gradients from A = dL/dW_hat on A's entries
        (A may be overwritten). Default: W_hat = W * M with M constant, dW = A * M."""
        return A.like(np.multiply(A.values, A.take(fm.keep))), {}

    def mask_inputs(self, layer) -> tuple:
        """Arrays besides W that M depends on (an unchanged set lets evaluation reuse M)."""
        return ()

    # -- hooks ------------------------------------------------------------------
    def new_state(self, layer) -> FastState:
        return FastState()

    def mask(self, layer):
        st = layer.state
        if st.M is None and st.fmask is not None:
            st.M = st.fmask.M.reshape(layer.weight.shape)
        return st.M

    def mask_nnz(self, layer) -> int:
        fm = layer.state.fmask
        return layer.weight.size if fm is None else fm.nnz

    def forward(self, layer, x2: np.ndarray, transposed: bool, plan: StepPlan) -> np.ndarray:
        """Y2 = X2 W_hat^T, or Y2^T = W_hat X2^T for an X2^T (fan_in, rows) when ``transposed``."""
        st = layer.state
        st.mode = self._mode(layer, plan)
        st.fmask, st.kernel = self._forward_state(layer, st, layer.weight2d, transposed, plan)
        st.M = None
        y2 = st.kernel.forward_t(x2) if transposed else st.kernel.forward(x2)
        st.prev_kernel = st.kernel
        return y2

    def backward(self, layer, dy2, x2, transposed: bool, plan: StepPlan) -> Backward:
        """dX2 = dY2 W_hat (None unless ``plan.input_grad``), A by this step's mode, the rule."""
        st, tr = layer.state, transposed
        dx2 = None
        if plan.input_grad:
            dx2 = st.kernel.backward_data_t(dy2) if tr else st.kernel.backward_data(dy2)
        support, st.support = st.support, None
        if support is not None:
            A = Entries(kernels.sampled_product_csr(dy2, x2, support, path=layer.kernel_path,
                                                    transposed=tr), support)
            mode = st.mode
        else:
            # The exact algorithm needs the dense A: D is defined by dW's row sums.
            A = Entries(kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2))
            mode = "exact"
        dW, grads = self.grads(layer, A, st.fmask)
        st.kernel = None
        return Backward(dx2, dW, grads, mode)

    # -- the machinery -------------------------------------------------------------
    def _mode(self, layer, plan: StepPlan) -> str:
        mode = plan.weight_grad or self.default_weight_grad(layer.settings)
        if mode == "predicted" and not _has_previous_mask(layer):
            return "exact"             # no previous D: the first step is the exact step
        return mode

    def _forward_state(self, layer, st: FastState, w2: np.ndarray, transposed: bool,
                       plan: StepPlan):
        """This forward's ForwardMask and kernel; in evaluation both are reused
        while W and the mask's inputs are unchanged (compared with a snapshot, one pass)."""
        inputs = self.mask_inputs(layer)
        cache = st.eval_cache
        key = (layer.kernel_path, kernels.get_default_path(), transposed)
        if (not layer.training and cache is not None and cache[0] == key
                and all(np.array_equal(a, b) for a, b in zip(cache[1], inputs))
                and np.array_equal(cache[2], w2)):
            return cache[3], cache[4]
        fm = self.forward_mask(layer, w2)
        st.support = m_support = None
        if layer.training and st.mode == "predicted":
            # This step's S = M | D_prev, made here so that M's sparse structure is
            # taken from it (no second pass over W to find M's entries).
            S = st.support = kernels.support_structure(layer.backward_mask.union(fm.keep))
            m_support = lambda: S.subset(fm.keep.reshape(-1).take(S.flat))
        elif layer.training and st.mode == "mask":
            S = st.support = kernels.support_structure(fm.keep)
            m_support = lambda: S
        kernel = kernels.prepare_weight(None, path=layer.kernel_path, weight=w2, pattern=fm.keep,
                                        nnz=fm.nnz, products=2 if plan.input_grad else 1,
                                        previous=st.prev_kernel, transposed=transposed,
                                        support=m_support)
        if layer.training or fm.reset:
            st.eval_cache = None
        else:
            st.eval_cache = (key, tuple(a.copy() for a in inputs), w2.copy(), fm, kernel)
        return fm, kernel


def _has_previous_mask(layer) -> bool:
    """Whether a backward mask of W's current shape is known."""
    D = layer.backward_mask
    return D is not None and D.shape == layer.weight2d.shape


class FastDense(Implementation):
    """The unmasked layer: the engine's dense products (no M, no rule)."""

    kind = "fast"

    def new_state(self, layer) -> None:
        return None

    def mask(self, layer):
        return None

    def mask_nnz(self, layer) -> int:
        return layer.weight.size

    def forward(self, layer, x2, transposed: bool, plan: StepPlan):
        w2 = layer.weight2d
        # runtime.matmul, as the engine's product: a large one shares the cores inside a step
        return kernels.dense_forward_t(w2, x2) if transposed else matmul(x2, w2.T)

    def backward(self, layer, dy2, x2, transposed: bool, plan: StepPlan) -> Backward:
        tr, w2 = transposed, layer.weight2d
        A = kernels.weight_gradient_t(dy2, x2) if tr else kernels.weight_gradient(dy2, x2)
        dx2 = None
        if plan.input_grad:
            dx2 = kernels.dense_backward_data_t(w2, dy2) if tr else kernels.dense_backward_data(dy2, w2)
        return Backward(dx2, Entries(A), {}, "exact")
