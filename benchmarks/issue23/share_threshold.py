"""Which products should share the cores? The nothing-pinned step with runtime.SHARE_MACS varied.

    env -u OPENBLAS_NUM_THREADS python benchmarks/issue23/share_threshold.py MODEL BATCH [ROUNDS] [--torch]

A process with nothing pinned (two BLAS threads here), one exact DFBST step
at 10 % forward density (the bench's variant, auto path), timed with each
threshold in turn, round by round in the same process (so that the
machine's drift affects them all alike): median and fastest ms per step.
``--torch`` imports torch first, as the bench's processes do.
"""
import sys, time, numpy as np
import dfbst_np.runtime as rt
if "--torch" in sys.argv: import torch; sys.argv.remove("--torch")
from dfbst_np.bench.variants import numpy_variant, batch_data
model, batch = sys.argv[1], int(sys.argv[2])
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
print("BLAS threads", rt.blas_thread_count())
v = numpy_variant(model, "dfbst", "auto", 0.1, batch, batch_data(batch))
v.restore()
for _ in range(3): v.step()
settings = {"2^25 (old)": 1 << 25, "2^22": 1 << 22, "2^20": 1 << 20, "2^18": 1 << 18, "never": 1 << 62}
res = {k: [] for k in settings}
n = 20 if model == "lenet300_100" else 5
for r in range(rounds):
    for k, s in settings.items():
        rt.SHARE_MACS = s
        v.restore(); v.step()
        t0 = time.perf_counter()
        for _ in range(n): v.step()
        res[k].append((time.perf_counter() - t0) / n * 1e3)
for k, x in res.items():
    print(f"{model} b{batch} SHARE_MACS {k:12s} median {np.median(x):7.2f} ms  (min {min(x):.2f})")
