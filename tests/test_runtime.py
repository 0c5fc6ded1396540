"""dfbst_np.runtime: scoped BLAS limits restore what was there; pinning is process-wide.

Pinning changes the whole process, so those checks run in a fresh interpreter.
"""
import subprocess
import sys
import textwrap

import pytest
from threadpoolctl import threadpool_info

from dfbst_np import runtime


def _blas_counts():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_step_threads_limits_inside_and_restores_after():
    before = _blas_counts()
    with runtime.step_threads(None) as n:
        assert n == runtime.STEP_THREADS
        assert set(_blas_counts()) == {runtime.STEP_THREADS}
    assert _blas_counts() == before


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pinned_process_is_left_alone_by_the_step():
    out = _run("""
        from threadpoolctl import threadpool_info
        from dfbst_np import runtime
        runtime.set_blas_threads(2)
        with runtime.step_threads(None) as n:
            inside = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        print(n, sorted(inside), runtime.pinned_blas_threads())
    """)
    assert out == "2 [2] 2"


def test_trainer_step_does_not_change_the_process():
    out = _run("""
        import numpy as np
        from threadpoolctl import threadpool_limits, threadpool_info
        import dfbst_np as dn
        threadpool_limits(2, user_api="blas")
        m = dn.models.build("lenet300_100", method="dfbst", num_classes=10, dtype=np.float64,
                            rng=np.random.default_rng(0))
        seen = []
        tr = dn.Trainer(m)
        rng = np.random.default_rng(1)
        tr.step(rng.random((4, 784)), rng.integers(0, 10, 4), 1, 0,
                trace=lambda s, v: seen.append({i["num_threads"] for i in threadpool_info()
                                                if i["user_api"] == "blas"}))
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        print(sorted(set.union(*seen)), sorted(after))
    """)
    assert out == "[1] [2]"


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="BLAS threads"):
        runtime.set_blas_threads(0)
