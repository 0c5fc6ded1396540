"""dy.T @ x against (x.T @ dy).T (made contiguous) for the weight gradient A = dY^T X,
and the same two forms in the convolutions' transposed layout, at the product shapes
(rows, out, fan_in) of the LeNets, VGG-16 and ResNet-18. Microseconds, best of 5.

    python benchmarks/weight_gradient_forms.py 1     # BLAS threads
    python benchmarks/weight_gradient_forms.py 2

Output of both on the project's machine: weight_gradient_forms.txt.
"""
import os, sys
os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[1]
import numpy as np, timeit
rng=np.random.default_rng(0)
def t(f, n):
    f(); return min(timeit.repeat(f, number=n, repeat=5))/n*1e6
shapes = [(64,300,784),(64,100,300),(64,10,100),(64,500,800),(256,300,784),(256,500,800),(36864,20,25),(4096,50,500),(16384,50,500),(256,512,4608),(1024,256,2304)]
worse = []
for dt in (np.float32, np.float64):
    for (N,o,fi) in shapes:
        x=rng.standard_normal((N,fi)).astype(dt); dy=rng.standard_normal((N,o)).astype(dt)
        n = max(3, int(2e7/(N*o*fi)))
        a=t(lambda: dy.T@x, n); b=t(lambda: np.ascontiguousarray((x.T@dy).T), n)
        # transposed layout used by convs: dyt @ xt.T
        xt=np.ascontiguousarray(x.T); dyt=np.ascontiguousarray(dy.T)
        c=t(lambda: dyt@xt.T, n); d=t(lambda: np.ascontiguousarray((xt@dyt.T).T), n)
        print(np.dtype(dt).name, (N,o,fi), "dy.T@x %.0f  (x.T@dy).T %.0f | dyt@xt.T %.0f (xt@dyt.T).T %.0f"%(a,b,c,d))
