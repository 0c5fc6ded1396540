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


def test_large_products_share_the_process_threads_inside_the_step():
    out = _run("""
        import numpy as np
        from threadpoolctl import threadpool_limits, threadpool_info
        from dfbst_np import runtime
        def counts():
            return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        threadpool_limits(2, user_api="blas")        # the process's threads, as a user left them
        big, small = runtime.SHARE_MACS, runtime.SHARE_MACS - 1
        seen = []
        with runtime.step_threads(None):
            seen.append((runtime.threads_for(big), runtime.threads_for(small)))
            with runtime.product_threads(big):
                seen.append(counts())
            seen.append(counts())
            with runtime.product_threads(small):
                seen.append(counts())
            a = np.ones((2, 3)); b = np.ones((3, 4))
            seen.append(float(runtime.matmul(a, b).sum()))
        seen.append(counts())
        with runtime.product_threads(big):             # outside a step: left as it is
            seen.append(counts())
        print(seen)
    """)
    assert out == "[(2, 1), [2], [1], [1], 24.0, [2], [2]]"


def test_a_pinned_process_never_shares():
    out = _run("""
        from dfbst_np import runtime
        runtime.set_blas_threads(1)
        with runtime.step_threads(None):
            print(runtime.threads_for(runtime.SHARE_MACS * 100))
    """)
    assert out == "1"
