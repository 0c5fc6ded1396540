"""How many threads BLAS may use, set at run time.

For the small products of the LeNets, OpenBLAS's threads cost more in
synchronisation than they save (on this project's 2-core machine a
LeNet-300-100 step took ~50x longer with two threads than with one when the
other core was busy), so training pins them, by default to 1.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, List


def _openblas_libs() -> List[str]:
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "openblas" in line.lower()
                           and line.split()[-1].startswith("/")})
    except OSError:
        return []


def set_blas_threads(n: int) -> Dict[str, int]:
    """Pin the threads of numpy's and scipy's OpenBLAS to n.

    Returns what each library reports afterwards.
    """
    import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS so it is pinned too)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    report = {}
    for path in _openblas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes = [ctypes.c_int]
                    setter(int(n))
                    getter.restype = ctypes.c_int
                    report[os.path.basename(path)] = int(getter())
                    break
            else:
                continue
            break
    return report
