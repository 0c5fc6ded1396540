"""Whole training steps of two versions of dfbst_np, interleaved in one process, in CPU time.

    mkdir -p /tmp/old && git archive <old-commit> dfbst_np | tar -x -C /tmp/old && mv /tmp/old/dfbst_np /tmp/old/dfbst_np_old
    DFBST_NP_COST_MODEL=builtin PYTHONPATH=$PWD:/tmp/old python benchmarks/issue23/ab_step.py lenet300_100 64 0.1 30 5

Arguments: model, batch, density, rounds, steps per round [, method]. Every round
times each variant (dense, old, new) for ``steps`` steps; reported are the
medians over rounds of the process's CPU time per step (less disturbed than the
wall time on a shared machine) and the median of the paired new/old ratios.
The old version must have the bench of that time (``dfbst_np_old.bench``
with ``numpy_variant`` and ``set_blas_threads``).
"""
import sys, time, numpy as np
from dfbst_np.bench import variants as nb
from dfbst_np_old import bench as ob
from dfbst_np.runtime import set_blas_threads
from dfbst_np_old.runtime import set_blas_threads as old_set
set_blas_threads(1); old_set(1)
model = sys.argv[1] if len(sys.argv) > 1 else "lenet300_100"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
dens = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 10
method = sys.argv[6] if len(sys.argv) > 6 else "dfbst"
data = nb.batch_data(batch)
vs = {"dense": nb.numpy_variant(model, "dense", "-", 1.0, batch, data),
      "old": ob.numpy_variant(model, method, "auto", dens, batch, data),
      "new": nb.numpy_variant(model, method, "auto", dens, batch, data)}
cpu = {k: [] for k in vs}; wall = {k: [] for k in vs}
for v in vs.values():
    v.restore(); [v.step() for _ in range(3)]
for r in range(rounds):
    for k, v in vs.items():
        v.restore()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            v.step()
        cpu[k].append((time.process_time() - c0) / steps * 1e3)
        wall[k].append((time.perf_counter() - w0) / steps * 1e3)
m = {k: np.median(x) for k, x in cpu.items()}
rat = np.median(np.array(cpu["new"]) / np.array(cpu["old"]))
print(f"{model} b{batch} {method} @{dens} CPU ms/step (median of {rounds} rounds of {steps}): dense {m['dense']:.3f}, "
      f"old {m['old']:.3f}, new {m['new']:.3f}; old/dense {m['old']/m['dense']:.2f}, new/dense {m['new']/m['dense']:.2f}, "
      f"new/old paired {rat:.3f}; wall medians " + ", ".join(f"{k} {np.median(x):.2f}" for k, x in wall.items()))
