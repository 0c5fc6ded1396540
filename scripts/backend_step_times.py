"""Step times of the run loop's two backends, NumPy and torch (CPU), for the four models.

Each backend is the object ``python -m dfbst_np train --backend ...`` drives
(:func:`dfbst_np.train.backend.trainer_for`), and a step is its whole
``step(x, y, epoch, index)``: for torch that includes the batch's copy to
the device and the statistics the run loop records (densities, the FLOPs
ledger). DFBST at the reference settings, float32, batch 64, epoch 2 (so the
beta term is in), the first steps of a run (forward density near 1: later,
sparser steps are faster on NumPy's sparse kernels and cost the same on
torch). Inputs: the committed sample for the LeNets, seeded random images for
VGG-16 (CIFAR-10 shape) and ResNet-18 (CIFAR-100). The median of ``--steps``
steps after ``--warmup``, all on one BLAS / torch thread, then torch again on
its default number of threads. Usage:

    OPENBLAS_NUM_THREADS=1 python scripts/backend_step_times.py [--steps 10] [--models ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dfbst_np.runtime import set_blas_threads  # noqa: E402
from dfbst_np.train.backend import trainer_for  # noqa: E402
from dfbst_np.train.config import default_config  # noqa: E402
from dfbst_np.train.data import load_dataset  # noqa: E402

MODELS = ("lenet300_100", "lenet_5", "vgg16", "resnet18")
NUM_CLASSES = {"lenet300_100": 10, "lenet_5": 10, "vgg16": 10, "resnet18": 100}


def batches(model: str, n: int, batch: int = 64):
    rng = np.random.default_rng(0)
    if model.startswith("lenet"):
        d = load_dataset("sample", train=True)
        x, y = d.images[:n * batch], d.labels[:n * batch]
    else:
        x = rng.standard_normal((n * batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, NUM_CLASSES[model], n * batch)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n)]


def time_steps(model: str, backend: str, steps: int, warmup: int) -> float:
    """Median seconds per step."""
    cfg = default_config(model, "dfbst", backend=backend)
    be = trainer_for(cfg, NUM_CLASSES[model])
    times = []
    for index, (x, y) in enumerate(batches(model, warmup + steps)):
        t0 = time.perf_counter()
        be.step(x, y, epoch=2, index=index)
        if index >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = p.parse_args()
    import torch
    from dfbst_np.reference.backend import set_threads
    default_threads = torch.get_num_threads()
    print("| model | NumPy, 1 thread (ms) | torch CPU, 1 thread (ms) | "
          f"torch CPU, {default_threads} threads (ms) |")
    print("|---|---|---|---|")
    for model in args.models:
        set_blas_threads(1)
        set_threads(1)
        t_np = time_steps(model, "numpy", args.steps, args.warmup)
        t_t1 = time_steps(model, "torch", args.steps, args.warmup)
        set_threads(default_threads)
        t_tn = time_steps(model, "torch", args.steps, args.warmup)
        print(f"| {model} | {t_np * 1e3:.1f} | {t_t1 * 1e3:.1f} | {t_tn * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
