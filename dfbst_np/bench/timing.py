"""How the variants are timed: interleaved rounds, peak memory, the summary row (the time
per part is :mod:`dfbst_np.bench.parts`)."""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from typing import Dict, Sequence

import numpy as np

from .common import PARTS, torch_module
from .variants import Variant


def time_round_robin(variants: Sequence[Variant], warmup: int, rounds: int, steps: int) -> None:
    """Warm every variant up, then time ``rounds`` x ``steps`` steps of each, interleaved."""
    for v in variants:
        v.restore()
        for _ in range(warmup):
            v.step()
    for _ in range(rounds):
        for v in variants:
            v.restore()
            for _ in range(steps):
                c0, t0 = time.process_time(), time.perf_counter()
                v.step()
                v.times.append(time.perf_counter() - t0)
                v.cpu_times.append(time.process_time() - c0)


# What torch writes to stderr (file descriptor 2, from C++) around every memory-profiled
# step, none of it about the run: kineto logs each profiler start and stop
# ("USDT: ... SyncActivityProfilerHandler.cpp ... profiler_start"), and c10's CPU allocator
# warns once that blocks allocated before profiling started will not be counted (they
# are not meant to be: the peak is taken above the step's start). Neither can be turned
# off from Python once torch is loaded.
_PROFILER_NOISE = re.compile(r"SyncActivityProfilerHandler|\] profiler_st(art|op)\b|"
                             r"allocated before the profiling started")


@contextmanager
def without_profiler_noise():
    """Hold back the profiler's own lines on stderr; pass every other line on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _PROFILER_NOISE.search(line):
                    sys.stderr.write(line)


def peak_memory(v: Variant) -> float:
    """Peak bytes allocated during one step above what was live at its start."""
    v.restore()
    if v.impl == "dfbst_np":
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            v.step()
            return float(tracemalloc.get_traced_memory()[1] - start)
        finally:
            tracemalloc.stop()
    torch = torch_module()
    try:
        profiler = torch.profiler
        with without_profiler_noise(), \
                profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            v.step()
        cur = peak = 0
        for e in sorted(prof.events(), key=lambda e: e.time_range.start):
            cur += e.self_cpu_memory_usage
            peak = max(peak, cur)
        return float(peak)
    except Exception:  # pragma: no cover - a torch without the profiler
        return float("nan")


def mask_floor_bytes(v: Variant) -> float:
    r"""The least memory traffic of one step's mask work, in bytes (b bytes per value).

    Per masked weight entry: the forward mask reads W and writes M as one
    byte (b + 1); the gradient rule reads A, W and M and writes dW (3b + 1);
    a backward mask reads dW and writes D and dW * D (2b + 1). Any
    implementation moves at least this; the bench reports it against the
    measured time of the mask work (and beside the speed of a plain copy),
    to show how far from the memory floor the NumPy passes are.
    """
    if v.trainer is None:
        return float("nan")
    total = 0.0
    for _, layer in v.trainer.layers:
        if not layer.impl.method.masked:
            continue                                   # unmasked: no mask work
        b = layer.weight.dtype.itemsize
        per = (b + 1) + (3 * b + 1) + ((2 * b + 1) if layer.dmask_nnz is not None else 0)
        total += per * layer.weight.size
    return total


def copy_bandwidth(nbytes: int = 1 << 20, repeat: int = 50) -> float:
    """Bytes per second of ``np.copyto`` between two arrays of ``nbytes`` (read + write
    counted), the fastest of ``repeat``: the memory speed the mask work is compared with."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def summarise(v: Variant, model_name: str, batch: int, threads: int, parts: Dict[str, float],
              memory: float) -> Dict[str, object]:
    t = np.array(v.times)
    med = float(np.median(t))
    fwd, bwd = v.densities()
    flops = v.flops()
    row = dict(model=model_name, batch=batch, setting=v.setting,
               threads=threads if v.threads is None else v.threads, impl=v.impl, variant=v.name,
               path=v.path, target_density=v.density, fwd_density=fwd, bwd_density=bwd,
               median_ms=med * 1e3, p25_ms=float(np.percentile(t, 25)) * 1e3,
               p75_ms=float(np.percentile(t, 75)) * 1e3, min_ms=float(t.min()) * 1e3,
               steps=len(t), gflops=flops / med / 1e9 if med > 0 else float("nan"),
               peak_mem_mb=memory / 2 ** 20,
               cpu_ms=float(np.median(v.cpu_times)) * 1e3 if v.cpu_times else float("nan"))
    for k in PARTS:
        row[f"{k}_ms"] = parts.get(k, float("nan")) * 1e3 if parts else float("nan")
    floor = mask_floor_bytes(v)
    mask_s = parts.get("masks", float("nan")) if parts else float("nan")
    row["mask_floor_mb"] = floor / 2 ** 20
    row["mask_gbs"] = floor / mask_s / 1e9 if mask_s and mask_s > 0 else float("nan")
    return row
