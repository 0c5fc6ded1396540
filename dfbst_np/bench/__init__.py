r"""``python -m dfbst_np bench``: whole training steps, side by side, in one process.

What is timed
-------------
One training step of :class:`~dfbst_np.train.trainer.Trainer` (forward, loss,
backward with the mask rule, backward mask, clipping, SGD) of LeNet-300-100
and LeNet-5 in float32, at batch 64 and 256, for

* ``dfbst_np dense``: the unmasked network (method ``dense``);
* ``dfbst_np dst`` and ``dfbst_np dfbst`` (the exact algorithm) on the
  ``dense`` path, the ``sparse`` path and the ``auto`` choice;
* ``dfbst_np dfbst-predicted``: the accelerated approximation
  (``weight_grad="predicted"``, see :mod:`dfbst_np.sparse.masked`) on the
  three paths;

each with forward thresholds set so that every row of every masked layer
keeps the target fraction of its weights (50, 20, 10, 5, 2, 1 %; a row
keeps at least 1.25 % and one weight: at <= 1 % SPEC's reset rule would
fire and make the layer dense) and backward thresholds u set from the gradient of the timed batch so
that D keeps about the same fraction; and, when PyTorch is installed,

* ``torch reference-dfbst``: :class:`~dfbst_np.reference.ReferenceTrainer`
  on the reference model (float32 masks, as the authors'), same weights and
  thresholds;
* ``torch dense``: plain PyTorch dense training of the same network (the
  reference model with method ``dense``, i.e. ``F.linear``/``F.conv2d`` on
  the weights, ReLU, max pooling, cross-entropy, ``clip_grad_norm_`` and
  ``torch.optim.SGD`` with the reference recipe's settings), run by the
  same :class:`~dfbst_np.reference.ReferenceTrainer`. PyTorch is used only
  through :mod:`dfbst_np.reference`, the one package that imports it;
* ``dfbst_np dfbst-textbook``: ``Trainer(..., textbook=True)``, the step
  through :mod:`dfbst_np.textbook` with dense products;

all of these with the BLAS and torch threads pinned ("pinned" in the
``setting`` column); and, at :data:`UNPINNED_DENSITIES`, the library as a
user meets it, in processes where nothing pinned threads (:data:`UNPINNED`):
the DFBST step through ``dn.Trainer`` with its defaults ("library
defaults": the Trainer limits BLAS threads per step, scoped, by
:func:`dfbst_np.runtime.step_threads`), the same step with every thread the
process has ("no thread limit"), and the authors' step with torch's own
default threads.

Method
------
All variants of one (model, batch) are built first and warmed up; then the
steps are timed round-robin (every round restores each variant's state,
weights, thresholds, optimiser state, and runs a few steps of each), so
that machine load falls on all of them alike. Reported per variant: the
median step time and its spread (25th and 75th percentiles, and the
minimum), the process's CPU time per step (on a shared machine less
disturbed than the wall time), the time per part from the steps of an
instrumented twin (:mod:`dfbst_np.bench.parts`: forward products,
backward-data products, weight gradient, masks and thresholds, optimiser,
and the rest: activations, pooling, im2col, loss, clipping, Python), the
mask work's least memory traffic against its time, the
achieved GFLOP/s (FLOPs as SPEC's cost ledger counts them for what the
variant computes: dense training 3 * 2 N numel(W); the exact mode 2 N nnz(M)
forward and backward-data plus 2 N numel(W); the predicted mode 2 N |S| for
the weight gradient; the PyTorch reference computes dense products), the
forward and backward densities actually seen, and the peak memory of a step
(bytes allocated above the step's start: ``tracemalloc`` for NumPy; the
PyTorch profiler's allocation trace for torch, an approximation).

The BLAS thread count is pinned for numpy's and scipy's BLAS (through
:mod:`dfbst_np.runtime`, i.e. threadpoolctl) and PyTorch
(``torch.set_num_threads``), and reported. The nothing-pinned rows are
timed first, each setting in a child Python process started without the
thread environment variables (:data:`THREAD_ENV`), so that neither this
process's pin nor another variant's spinning thread pool reaches them.
Nothing is asserted: ``--quick`` runs a few steps of small batches so that
CI keeps the command alive.
"""
from .common import BATCHES, DENSITIES, MODELS, PARTS, PATHS, UNPINNED_DENSITIES, machine, set_threads
from .cli import add_arguments, main, run, run_cli

__all__ = ["MODELS", "BATCHES", "DENSITIES", "UNPINNED_DENSITIES", "PATHS", "PARTS", "run",
           "main", "add_arguments", "run_cli", "machine", "set_threads"]
