"""Would numexpr (a well-kept library that fuses NumPy expressions) make the mask work faster?

    pip install numexpr==2.14.2 && OPENBLAS_NUM_THREADS=1 python benchmarks/issue23/numexpr_try.py

Times single passes over a (300, 784) float64 matrix, fc1's shape, with one
thread each: NumPy's calls against numexpr evaluating the fused expressions
the mask rule would need (the per-row threshold ``tau`` broadcast as a
(300, 1) column). numexpr is not a dependency of dfbst_np: this script
is how that was decided (benchmarks/README.md, "The NumPy floor of the mask
work, measured").
"""
import time, numpy as np, numexpr as ne
from threadpoolctl import threadpool_limits
threadpool_limits(1); ne.set_num_threads(1)
rng = np.random.default_rng(0)
w = rng.normal(0, 0.05, (300, 784)); A = rng.normal(0, 1e-3, (300, 784)); tau = np.full((300, 1), 0.03)
keep = np.abs(w) > tau
def t(f, n=200):
    """Mean microseconds of one call of f over n calls (after one warm-up call)."""
    f(); c0 = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - c0) / n * 1e6
H = "where(abs(Z) <= 0.4, 2 - 4*abs(Z), where(abs(Z) <= 1, 0.4, 0.0))"
out = np.empty_like(w)
print("numpy: np.abs(w)", t(lambda: np.abs(w, out=out)))
print("numpy: w * A", t(lambda: np.multiply(w, A, out=out)))
print("numexpr: abs(w)>tau", t(lambda: ne.evaluate("abs(w) > tau")))
print("numexpr: h", t(lambda: ne.evaluate(H.replace("Z", "(abs(w) - tau)"), out=out)))
print("numexpr: h simple", t(lambda: ne.evaluate("2 - 4*abs(abs(w) - tau)", out=out)))
print("numexpr: dW", t(lambda: ne.evaluate("where(keep, A, 0.0) + (A * abs(w)) * 2.0", out=out)))
print("numexpr: rowsum", t(lambda: ne.evaluate("sum(abs(w), axis=1)")))
print("numexpr: sum", t(lambda: ne.evaluate("sum(abs(w))")))
print("numexpr: mul", t(lambda: ne.evaluate("w*A", out=out)))
