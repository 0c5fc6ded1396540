"""Median training-step time of the dfbst_np on sys.path, float32, one BLAS thread, batch 64.

    PYTHONPATH=<checkout> python benchmarks/before_after.py

run once for each checkout to compare (benchmarks/README.md, "Before and after").
"""
import os, sys, time, copy
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np
import dfbst_np as dn
from dfbst_np.train.trainer import Trainer
from dfbst_np.sparse.masked import masked_layers
from dfbst_np.nn.loss import CrossEntropyLoss

def setup(name, method, d, B):
    rng = np.random.default_rng(0)
    x = rng.random((B, 1, 28, 28), dtype=np.float32); y = rng.integers(0, 10, B)
    m = dn.models.build(name, method=method, dtype=np.float32, rng=np.random.default_rng(7))
    if method != "dense" and d < 1:
        for _, l in masked_layers(m):
            a = np.sort(np.abs(l.weight2d), axis=1); k = max(int(round(d * a.shape[1])), int(np.ceil(0.0125 * a.shape[1])))
            l.params["threshold"][...] = (a[:, -k - 1] + a[:, -k]) / 2
        if method == "dfbst":
            loss = CrossEntropyLoss(dtype=np.float32); m.train(); m.zero_grad()
            loss.forward(m.forward(x), y); m.backward(loss.backward())
            for _, l in masked_layers(m):
                g = np.abs(l.grads["weight"].reshape(l.weight.shape[0], -1)).astype(np.float64)
                gh = np.sort(g / np.maximum(g.sum(1, keepdims=True), 1e-300), axis=1)
                k = max(int(round(d * gh.shape[1])), int(np.ceil(0.0125 * gh.shape[1])))
                l.params["dthreshold"][...] = (gh[:, -k - 1] + gh[:, -k]) / 2
            m.zero_grad()
    tr = Trainer(m)
    return m, tr, x, y

def run(name, method, d, B, rounds=10, steps=5):
    m, tr, x, y = setup(name, method, d, B)
    i = 0
    for _ in range(3):
        i += 1; tr.step(x, y, epoch=2, index=i)
    sd, od, prev = m.state_dict(), tr.optimizer.state_dict(), copy.deepcopy(tr.prev)
    ts = []
    for _ in range(rounds):
        m.load_state_dict(sd); tr.optimizer.load_state_dict(od); tr.prev = copy.deepcopy(prev)
        for _ in range(steps):
            i += 1; t0 = time.perf_counter(); tr.step(x, y, epoch=2, index=i); ts.append(time.perf_counter() - t0)
    return np.median(ts) * 1e3

for name, B in (("lenet300_100", 64), ("lenet_5", 64)):
    for method in ("dense", "dst", "dfbst"):
        for d in ((1.0,) if method == "dense" else (1.0, 0.1)):
            print(f"{name} b{B} {method} d={d}: {run(name, method, d, B):.2f} ms", flush=True)
