"""The library as a user meets it: the nothing-pinned rows, each setting in a process of its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence

from ..runtime import STEP_THREADS, blas_thread_count, pinned_blas_threads
from .common import torch_module
from .timing import summarise, time_round_robin
from .variants import Variant, batch_data, numpy_variant, torch_reference_variant


#: Environment variables through which BLAS threads are pinned before Python
#: starts; the nothing-pinned process runs without them.
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


#: The nothing-pinned variants, each timed in a process of its own (an OpenBLAS
#: or OpenMP thread pool left spinning by one variant would slow the next):
#: (setting, impl, what it is).
UNPINNED = (("library defaults", "dfbst_np", "dn.Trainer as a library user gets it: the Trainer "
             "limits BLAS threads per step by itself, scoped"),
            ("no thread limit", "dfbst_np", "the same step with the limit lifted to every thread "
             "the process has (what the library did before)"),
            ("library defaults", "torch", "the authors' step with torch's own default threads"))


def unpinned_variants(setting: str, impl: str, model_name: str, batch: int,
                      densities: Sequence[float]) -> List[Variant]:
    """The DFBST steps of one :data:`UNPINNED` entry (call only in a process nothing pinned)."""
    data = batch_data(batch)
    variants = []
    for d in densities:
        if impl == "torch":
            ours = numpy_variant(model_name, "dfbst", "auto", d, batch, data)   # weights, thresholds
            np_dense = numpy_variant(model_name, "dense", "-", 1.0, batch, data)  # FLOPs
            v = torch_reference_variant(model_name, d, data, ours, np_dense)
            v.threads = torch_module().get_num_threads()
        elif setting == "library defaults":
            v = numpy_variant(model_name, "dfbst", "auto", d, batch, data)
            every = blas_thread_count()         # what a product of runtime.SHARE_MACS or more gets
            v.threads = f"{STEP_THREADS}/{every}" if every > STEP_THREADS else STEP_THREADS
        else:
            every = blas_thread_count()
            v = numpy_variant(model_name, "dfbst", "auto", d, batch, data, blas_threads=every)
            v.threads = every
        v.setting = setting
        variants.append(v)
    return variants


def child_main(spec_path: str) -> None:
    """Entry point of a nothing-pinned process: time one :data:`UNPINNED` entry, write JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    if pinned_blas_threads() is not None:      # nobody may have pinned this process
        raise RuntimeError("bench: the nothing-pinned process was pinned")
    rows = []
    for model_name in spec["models"]:
        for batch in spec["batches"]:
            variants = unpinned_variants(spec["setting"], spec["impl"], model_name, batch,
                                         spec["densities"])
            time_round_robin(variants, spec["warmup"], spec["rounds"], spec["steps"])
            rows += [summarise(v, model_name, batch, v.threads, {}, float("nan")) for v in variants]
    torch = sys.modules.get("torch")
    threads = {"blas": blas_thread_count(), "torch": torch.get_num_threads() if torch else None}
    with open(spec["out"], "w") as f:
        json.dump({"rows": rows, "threads": threads}, f)


def run_unpinned(models: Sequence[str], batches: Sequence[int], densities: Sequence[float],
                 with_torch: bool, warmup: int, rounds: int, steps: int) -> Dict[str, object]:
    """Time the :data:`UNPINNED` variants, each in a fresh Python process that pins nothing.

    The bench pins threads for its other rows, so these run in child
    processes started without :data:`THREAD_ENV`. Returns {"rows", "threads"}
    (the children's BLAS and torch thread counts outside a step).
    """
    rows, threads = [], {}
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    code = "import sys; from dfbst_np.bench.unpinned import child_main; child_main(sys.argv[1])"
    with tempfile.TemporaryDirectory() as tmp:
        for i, (setting, impl, _) in enumerate(UNPINNED):
            if impl == "torch" and not with_torch:
                continue
            spec_path, out = os.path.join(tmp, f"spec{i}.json"), os.path.join(tmp, f"rows{i}.json")
            with open(spec_path, "w") as f:
                json.dump(dict(setting=setting, impl=impl, models=list(models), batches=list(batches),
                               densities=list(densities), warmup=warmup, rounds=rounds,
                               steps=steps, out=out), f)
            r = subprocess.run([sys.executable, "-c", code, spec_path], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"bench: the nothing-pinned process ({setting}, {impl}) "
                                   f"failed:\n{r.stderr[-3000:]}")
            with open(out) as f:
                result = json.load(f)
            rows += result["rows"]
            threads["blas"] = result["threads"]["blas"]
            if result["threads"]["torch"] is not None:
                threads["torch"] = result["threads"]["torch"]
    return {"rows": rows, "threads": threads}
