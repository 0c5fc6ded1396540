"""Where a nothing-pinned library step loses time against the pinned CLI step.

    python benchmarks/library_defaults_gap.py none     # library defaults: the Trainer's scoped one-thread limit only
    python benchmarks/library_defaults_gap.py alloc    # ... plus dfbst_np.runtime.keep_freed_memory()
    python benchmarks/library_defaults_gap.py pinned   # what the CLI does: BLAS pinned to 1 and the allocator setting

Run each in a fresh process with no thread variable set (env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS).
Prints the median of 40 DFBST steps of LeNet-5 at batch 256 (float32), after 5 warm-up steps.
"""
import sys
import time

import numpy as np

import dfbst_np as dn
from dfbst_np import runtime

mode = sys.argv[1] if len(sys.argv) > 1 else "none"
if mode not in ("none", "alloc", "pinned"):
    raise SystemExit("usage: library_defaults_gap.py none|alloc|pinned")
if mode == "alloc":
    runtime.keep_freed_memory()
if mode == "pinned":
    runtime.set_blas_threads(1)
    runtime.keep_freed_memory()
model = dn.models.build("lenet_5", method="dfbst", num_classes=10, dtype=np.float32,
                        rng=np.random.default_rng(0))
trainer = dn.Trainer(model)
rng = np.random.default_rng(1)
x, y = rng.random((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256)
times = []
for i in range(45):
    t0 = time.perf_counter()
    trainer.step(x, y, epoch=1, index=i)
    times.append(time.perf_counter() - t0)
print(f"{mode}: median {1e3 * np.median(times[5:]):.1f} ms")
