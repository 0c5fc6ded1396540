"""What every part of the bench shares: the settings timed, threads, the machine, torch."""
from __future__ import annotations

import os
import platform
import sys
from typing import Dict

import numpy as np

from ..runtime import keep_freed_memory, set_blas_threads

DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
#: Densities of the nothing-pinned comparison (library defaults vs pinned vs the authors').
UNPINNED_DENSITIES = (0.1,)
MODELS = ("lenet300_100", "lenet_5")
BATCHES = (64, 256)
PATHS = ("dense", "sparse", "auto")
PARTS = ("forward", "backward_data", "weight_grad", "masks", "optimiser", "other")
INPUT_SHAPE = (1, 28, 28)
RECIPE = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1, clip_norm=1.0)


def set_threads(n: int) -> Dict[str, object]:
    """Pin BLAS threads (numpy's and scipy's OpenBLAS) and torch's, if loaded, to n.

    Returns what each library reports afterwards.
    """
    report = set_blas_threads(n)
    keep_freed_memory()
    torch = torch_module()
    if torch is not None:
        torch.set_num_threads(int(n))
        report["torch"] = torch.get_num_threads()
    return report


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages ("unknown" where the OS has none): how
    shared the machine was while the figures were taken."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "unknown"


def machine() -> Dict[str, str]:
    """CPU model, logical CPUs, BLAS kernel, load, Python and library versions, and the
    cost model the ``auto`` path uses (loaded, or measured, here)."""
    import scipy
    from ..sparse import cost_cache
    from ..sparse.costs import model_info
    cost = model_info(np.float32)
    info = {"cpu": cost_cache.cpu_model(), "logical_cpus": str(os.cpu_count()),
            "blas": cost_cache.blas_kernel(), "load": load_average(),
            "cost_model": f"{cost['model']}: {cost['source']}",
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    torch = torch_module()
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def torch_module():
    """torch as loaded by :mod:`dfbst_np.reference` (the one package that imports it), or None."""
    try:
        from .. import reference  # noqa: F401
    except ImportError:
        return None
    return sys.modules.get("torch")
