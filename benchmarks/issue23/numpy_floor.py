"""How fast can NumPy do DFBST's exact mask work at all? A floor for issue 23's targets.

    OPENBLAS_NUM_THREADS=1 python benchmarks/issue23/numpy_floor.py [model] [batch] [rounds]

The mask work of one exact DFBST step (forward mask, gradient rule, backward
mask, V and dV/du, every masked layer) written as the shortest sequence of
NumPy passes we know, each the cheapest NumPy call for its job, with no
allocation (every result in a preallocated buffer), no checks, no branches,
no Python objects: 26 passes per layer (listed in ``passes`` below). It
computes the same quantities as the library (not bit for bit: the order of
a few products differs), on the inputs of a real step of the bench's exact
DFBST variant. Beside it: the library's own mask work on the same inputs,
and one 1 MB-scale copy per layer, the memory floor. Median of ``rounds``
rounds of 20 repetitions, wall time, one BLAS thread, freed memory kept (as
in the bench and the run loop).
"""
import sys
import time

import numpy as np

from dfbst_np.bench import variants as bench
from dfbst_np.runtime import keep_freed_memory, set_blas_threads
from dfbst_np.sparse import backward_mask as bm
from dfbst_np.sparse import mask_rule as mr
from dfbst_np.sparse.entries import Entries
from dfbst_np.sparse.fused import row_dots, row_sums, sub_rows

set_blas_threads(1)
keep_freed_memory()          # as the bench and the run loop: steps reuse their pages
model = sys.argv[1] if len(sys.argv) > 1 else "lenet300_100"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
data = bench.batch_data(batch)
v = bench.numpy_variant(model, "dfbst", "auto", 0.1, batch, data)
v.restore()
v.step()
layers = [layer for _, layer in v.trainer.layers]
f32 = layers[0].float32_masks
W = [layer.weight2d.copy() for layer in layers]
T = [layer.params["threshold"].copy() for layer in layers]
A = [layer.loss_grad().values.copy() for layer in layers]
U = [layer.params["dthreshold"].copy() for layer in layers]
B = [{k: np.empty_like(w) for k in ("absw", "z", "h", "t1", "dW", "g")} for w in W]
K = [np.empty(w.shape, bool) for w in W]
C = [np.empty_like(w) for w in W]


def passes():
    """The shortest pass sequence we know (the long-tailed h without its clip, which the
    library also skips when it cannot change anything)."""
    gs = []
    for w, t, a, b, keep in zip(W, T, A, B, K):
        tau = np.abs(t)
        np.abs(w, out=b["absw"])                       # 1 |W|
        sub_rows(b["absw"], tau, out=b["z"])           # 2 z = |W| - tau
        np.greater(b["z"], 0, out=keep)                # 3 M
        np.count_nonzero(keep)                         # 4 nnz (the reset rule)
        h = np.abs(b["z"], out=b["h"])                 # 5-7 h(z) = 2 - 4|z|
        h *= -4.0
        h += 2.0
        wh = np.multiply(w, h, out=b["t1"])            # 8 W h
        dt = -row_dots(a, wh)                          # 9 dt = -sum_j A W h
        np.abs(wh, out=wh)                             # 10 |W| h
        np.add(wh, keep, out=wh)                       # 11 M + |W| h
        gs.append(np.multiply(a, wh, out=b["dW"]))     # 12 dW = A (M + |W| h)
        del dt
    sums, n = [], 0
    for dW, u, b, keep in zip(gs, U, B, K):
        z = np.abs(dW, out=b["z"])                     # 13 |dW|
        r = row_sums(z)                                # 14 row sums
        r[r == 0] = 1                                  #    (a row of zeros normalises to 0)
        np.divide(z, r[:, None], out=z)                # 15 |Ghat|
        sub_rows(z, u, out=z)                          # 16 |Ghat| - u
        np.greater(z, 0, out=keep)                     # 17 D
        g = np.multiply(dW, keep, out=b["g"])          # 18 g = dW D
        sums.append(row_sums(g).sum())                 # 19 its sum
        n += dW.size
    mean = sum(sums) / n
    ss = 0.0
    for b in B:
        d = np.subtract(b["g"], mean, out=b["g"])      # 20 g - mean
        flat = d.reshape(-1)
        ss += np.dot(flat, flat)                       # 21 sum of squares
    c = 0.1 / ((n - 1) * np.sqrt(ss / (n - 1)))
    for dW, b in zip(gs, B):
        q = np.abs(b["z"], out=b["z"])                 # 22-24 h(|Ghat| - u)
        q *= -4.0
        q += 2.0
        q *= dW                                        # 25 dW h
        row_dots(b["g"], q) * -c                       # 26 dV/du


def library():
    gs = []
    for w, t, a in zip(W, T, A):
        fm = mr.forward_mask(w, t.copy(), "dfbst")
        dW, _ = mr.layer_grads(Entries(a.copy()), w, t, fm, "dfbst", overwrite_a=True,
                               float32_masks=f32)
        gs.append(dW)
    bm.backward_mask(gs, U, scale=0.1, float32_masks=f32)


def copies():
    for a, c in zip(A, C):
        np.copyto(c, a)


def a_copies():           # the library's inputs are copied each time (it overwrites A)
    for a in A:
        a.copy()


def median_us(f):
    f()
    res = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(20):
            f()
        res.append((time.perf_counter() - t0) / 20 * 1e6)
    return float(np.median(res))


floor, lib, copy, acopy = (median_us(f) for f in (passes, library, copies, a_copies))
lib -= acopy
print(f"{model} b{batch}, {W[0].dtype}, layers {[w.shape for w in W]}, float32 masks {f32}")
print(f"one copy of every weight matrix (memory floor of one pass): {copy:.0f} us")
print(f"26 NumPy passes per layer, nothing else:                   {floor:.0f} us "
      f"({floor / copy:.1f} copies)")
print(f"the library's mask work (A's copies subtracted):           {lib:.0f} us "
      f"({lib / floor:.2f}x the 26 passes)")
