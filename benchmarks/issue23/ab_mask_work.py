"""The mask work of two versions of dfbst_np on the inputs of a real step, interleaved, CPU time.

    DFBST_NP_COST_MODEL=builtin PYTHONPATH=$PWD:/tmp/old python benchmarks/issue23/ab_mask_work.py lenet300_100 64 40

(/tmp/old/dfbst_np_old: an older checkout's package, as for ab_step.py.) The
inputs (W, t, a gradient the shape of A, u) come from one step of the bench's
exact-DFBST variant; each round runs, for every masked layer, the forward
mask and the gradient rule, then the backward mask of all layers, with the
old and with the new functions; reported: median CPU time of each and the
median of the paired new/old ratios (A's copies subtracted).
"""
import sys, time, timeit, numpy as np
from dfbst_np.bench import variants as bench
from dfbst_np.runtime import set_blas_threads
from dfbst_np.sparse import mask_rule as new_mr, backward_mask as new_bm
from dfbst_np.sparse.entries import Entries
from dfbst_np_old.sparse import mask_rule as old_mr, backward_mask as old_bm
from dfbst_np_old.sparse.entries import Entries as OldEntries
set_blas_threads(1)
model = sys.argv[1] if len(sys.argv) > 1 else "lenet300_100"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
data = bench.batch_data(batch)
v = bench.numpy_variant(model, "dfbst", "auto", 0.1, batch, data)
tr = v.trainer
v.restore(); v.step()
layers = [l for _, l in tr.layers]
ws = [l.weight2d.copy() for l in layers]; ts = [l.params["threshold"].copy() for l in layers]
As = [l.loss_grad().values.copy() for l in layers]   # stand-in for A (same shape/scale)
us = [l.params["dthreshold"].copy() for l in layers]
def mk(mr, E, bm):
    def run():
        gs = []
        for w, t, A in zip(ws, ts, As):
            fm = mr.forward_mask(w, t.copy(), "dfbst")
            dW, dt = mr.layer_grads(E(A.copy()), w, t, fm, "dfbst", overwrite_a=True)
            gs.append(dW)
        bm.backward_mask(gs, us, scale=0.1)
    return run
def copies():
    for A in As: A.copy()
fs = {"old": mk(old_mr, OldEntries, old_bm), "new": mk(new_mr, Entries, new_bm), "copies": copies}
res = {k: [] for k in fs}
for f in fs.values(): f()
for rep in range(int(sys.argv[3]) if len(sys.argv) > 3 else 15):
    for k, f in fs.items():
        c0 = time.process_time(); [f() for _ in range(10)]; res[k].append((time.process_time() - c0) / 10 * 1e6)
med = {k: np.median(x) for k, x in res.items()}
old, new = med["old"] - med["copies"], med["new"] - med["copies"]
print(f"{model} b{batch}: mask work old {old:.0f} us, new {new:.0f} us, ratio new/old "
      f"{np.median(np.array(res['new']) / np.array(res['old'])):.3f} (median of paired rounds)")
