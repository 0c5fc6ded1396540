"""Write notebooks/exercises/*.ipynb, their solutions and their masters from one source.

The exercise and its solution are the same notebook except for the body of
the function the learner writes (a stub that raises NotImplementedError, or
the answer) and a last cell in the solution that asserts the check passed.
The master (notebooks/exercises/master/) is the teacher's notebook in
otter-grader's assign format: the answer inside solution markers, the stub as
the student's prompt, and one graded test per checker case (1 point each);
``scripts/release_exercises.py`` makes the student and autograder versions
from it (docs/teaching.md). Run from the repository root after editing this
file:

    python scripts/make_exercise_notebooks.py

then execute the exercise and solution folders (notebooks/README.md, "Running them").
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

from dfbst_np.exercises import backward_mask as bm_ex
from dfbst_np.exercises import forward_mask as fm_ex
from dfbst_np.exercises import gradient_rule as gr_ex
from dfbst_np.exercises import training_step as ts_ex

ROOT = Path(__file__).resolve().parents[1] / "notebooks" / "exercises"

SETUP = """import numpy as np
from dfbst_np import textbook as tb      # the building blocks you may use
"""

STUB = "    raise NotImplementedError  # your code here\n"

EXERCISES = [
    {
        "file": "e1_forward_mask.ipynb",
        "title": "Exercise 1: the forward mask and the reset",
        "intro": r"""DST and DFBST keep, in output unit $i$, the weights whose magnitude is above a learned threshold:

$$\tau_i = |t_i| \ \text{(DFBST)}, \quad \tau_i = t_i \ \text{(DST)}, \qquad M_{ij} = H(|W_{ij}| - \tau_i), \qquad H(x) = \begin{cases}1 & x > 0\\ 0 & x \le 0\end{cases}$$

If the whole layer keeps at most 1 % of its weights, the thresholds are **reset**: $t \leftarrow 0$ and $M$ is computed again (with $\tau = 0$).

Write `forward_mask(W, t, method)` returning `(M, t_new)`: `M` of `W`'s shape and dtype with 0/1 entries, `t_new` the thresholds after the reset rule (a copy of `t` when the rule does not fire). Do not modify `W` or `t`. You may use `tb.H`. Notebook 1 shows the mask; SPEC "Forward" states the rule.""",
        "imports": "from dfbst_np.exercises import check_forward_mask\n",
        "functions": [("""def forward_mask(W, t, method):
    \"\"\"M = H(|W| - tau) with tau = |t| (dfbst) or t (dst), then the reset rule.

    W : (out, fan_in); t : (out,); method : "dfbst" or "dst".
    Returns M (out, fan_in), 0/1 in W's dtype, and t_new (out,).
    \"\"\"
""", """    tau = np.abs(t) if method == "dfbst" else t
    M = tb.H(np.abs(W) - tau[:, None])
    if M.mean() <= 0.01:                      # the whole layer, <= 1 %
        t = np.zeros_like(t)
        M = tb.H(np.abs(W) - 0.0)             # exact zeros stay pruned
    return M, t.copy()
""")],
        "check": "result = check_forward_mask(forward_mask)",
        "after": [("markdown", "When the check passes, look at what the reset does to a layer whose thresholds grew too large:"),
                  ("code", """if result:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 8))
    for t in (np.full(3, 0.5), np.full(3, 3.0)):
        M, t_new = forward_mask(W, t, "dfbst")
        print(f"t = {t[0]:.1f}: density {M.mean():.3f}, t after the rule {t_new}")
else:
    print("(runs once the check passes)")""")],
    },
    {
        "file": "e2_ste_and_gradient_rule.ipynb",
        "title": "Exercise 2: the straight-through estimator and the gradient rule",
        "intro": r"""$H$ has derivative 0 almost everywhere, so DST and DFBST use, in the backward pass only, DST's long-tailed estimator $h$ in place of $H'$:

$$h(x) = \begin{cases} 2 - 4|x| & |x| \le 0.4 \\ 0.4 & 0.4 < |x| \le 1 \\ 0 & |x| > 1 \end{cases}$$

With $z_{ij} = |W_{ij}| - \tau_i$, $M = H(z)$, $\hat W = W \odot M$ and $A = \partial L / \partial \hat W = dY^\top X$, the chain rule with $h$ in place of $H'$ gives

$$\frac{\partial L}{\partial W} = A \odot \big(M + |W| \odot h(z)\big), \qquad \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j A_{ij} W_{ij}\, h(z_{ij}),$$

where $s(t) = d\tau/dt$: for DFBST ($\tau = |t|$) $s = 1$ if $t \ge 0$ and $-1$ if $t < 0$; for DST ($\tau = t$) $s = 1$. For `"dense"` there is no mask: $\partial L/\partial W = A$ and there is no $dt$ (return `None`).

Write `h(x)`, then `layer_grads(A, W, t, M, method)` returning `(dW, dt)` (you may use your `h`). Notebook 2 derives the rule.""",
        "imports": "from dfbst_np.exercises import check_h, check_layer_grads\n",
        "functions": [("""def h(x):
    \"\"\"DST's long-tailed estimator of H'(x), elementwise, in x's dtype.\"\"\"
""", """    a = np.abs(x)
    return np.where(a <= 0.4, 2 - 4 * a, np.where(a <= 1, 0.4, 0.0)).astype(x.dtype)
"""), ("""def layer_grads(A, W, t, M, method):
    \"\"\"dL/dW and dL/dt of a masked layer through the STE (no penalty term).

    A, W, M : (out, fan_in); t : (out,) the threshold the forward used (None for dense);
    method : "dfbst", "dst" or "dense". Returns dW (out, fan_in) and dt (out,) or None.
    \"\"\"
""", """    if method == "dense":
        return A.copy(), None
    tau = np.abs(t) if method == "dfbst" else t
    s = np.where(t >= 0, 1.0, -1.0) if method == "dfbst" else np.ones_like(t)
    z = np.abs(W) - tau[:, None]
    dW = A * (M + np.abs(W) * h(z))
    dt = -s * (A * W * h(z)).sum(axis=1)
    return dW, dt
""")],
        "check": "result_h = check_h(h)\nresult = check_layer_grads(layer_grads)",
        "after": [("markdown", "The threshold gets a gradient although the loss is a staircase in $t$ (notebook 1): with your rule, the sign of $dt$ for a negative threshold is flipped by $s(t)$. Compare the two signs of one threshold:"),
                  ("code", """if result:
    rng = np.random.default_rng(1)
    A, W = rng.standard_normal((1, 6)), rng.standard_normal((1, 6))
    dts = []
    for t in (np.array([0.3]), np.array([-0.3])):
        M, _ = tb.forward_mask(W, t, "dfbst")
        dts.append(layer_grads(A, W, t, M, "dfbst")[1][0])
        print(f"t = {t[0]:+.1f}: dt = {dts[-1]:+.4f}")
    assert np.isclose(dts[1], -dts[0])      # same |t|, same mask: only s(t) differs
else:
    print("(runs once the check passes)")""")],
    },
    {
        "file": "e3_backward_mask.ipynb",
        "title": "Exercise 3: the backward mask, V and dV/du",
        "intro": r"""DFBST masks the weight gradient too. For every masked layer, with its gradient $dW$ (out, fan_in) and backward thresholds $u$ (out,):

$$\hat G_{ij} = \frac{dW_{ij}}{\sum_k |dW_{ik}|} \ (\text{a row of zeros gives } 0), \qquad D = H(|\hat G| - u_i), \qquad g = dW \odot D .$$

$V$ is the unbiased standard deviation of all layers' $g$ entries together ($n$ entries in all), and it trains $u$ through the STE:

$$V = \sqrt{\tfrac{1}{n-1}\textstyle\sum_k (g_k - \bar g)^2}, \qquad \frac{\partial V}{\partial g_k} = \frac{g_k - \bar g}{(n-1)V}, \qquad \frac{\partial V}{\partial u_i} = -\sum_j \frac{\partial V}{\partial g_{ij}}\, dW_{ij}\, h(|\hat G_{ij}| - u_i).$$

Write `backward_mask(dWs, us)` for lists of layers, returning `(Ds, gs, V, dV_du)`: lists of $D$, $g$ and $\partial V/\partial u$ per layer, and $V$ as a float. You may use `tb.H` and `tb.h`. Notebook 4 takes this step apart.""",
        "imports": "from dfbst_np.exercises import check_backward_mask\n",
        "functions": [("""def backward_mask(dWs, us):
    \"\"\"D, g = dW * D, V = std(all g) and dV/du, for lists of layers.

    dWs : list of (out, fan_in); us : list of (out,). Returns Ds, gs (lists), V (float), dV_du (list).
    \"\"\"
""", """    zs = []
    for dW, u in zip(dWs, us):
        r = np.abs(dW).sum(axis=1, keepdims=True)
        G = np.divide(dW, r, out=np.zeros_like(dW), where=r != 0)    # L1 rows; zero rows stay 0
        zs.append(np.abs(G) - u[:, None])
    Ds = [tb.H(z) for z in zs]
    gs = [dW * D for dW, D in zip(dWs, Ds)]
    flat = np.concatenate([g.ravel() for g in gs])
    n, mean = flat.size, flat.mean()
    V = float(np.sqrt(((flat - mean) ** 2).sum() / (n - 1)))
    dV_du = [-((g - mean) / ((n - 1) * V) * dW * tb.h(z)).sum(axis=1) for g, dW, z in zip(gs, dWs, zs)]
    return Ds, gs, V, dV_du
""")],
        "check": "result = check_backward_mask(backward_mask)",
        "after": [("markdown", "Raising $u$ drops more gradient entries and lowers $V$, so $\\partial V/\\partial u < 0$ for most rows, and the term $\\beta V$ pushes $u$ up:"),
                  ("code", """if result:
    rng = np.random.default_rng(2)
    dW = rng.standard_normal((4, 50))
    for u in (0.0, 0.02, 0.04):
        Ds, gs, V, dV_du = backward_mask([dW], [np.full(4, u)])
        print(f"u = {u:.2f}: D keeps {Ds[0].mean():.2f}, V = {V:.3f}, dV/du = {np.round(dV_du[0], 2)}")
        assert (dV_du[0] < 0).mean() > 0.5
else:
    print("(runs once the check passes)")""")],
    },
    {
        "file": "e4_training_step.ipynb",
        "title": "Exercise 4: the order of one training step",
        "intro": r"""One DFBST step on one masked linear layer (softmax regression), with the textbook's functions as building blocks. The order matters:

1. the forward mask with the reset: `M, t = tb.forward_mask(W, t, "dfbst")` (from here on, $t$ is the reset one);
2. forward `tb.masked_forward`, cross-entropy `softmax_cross_entropy(Y, y) -> (L, dY)`, backward `tb.masked_backward` ($A$), $db = \sum_n dY_n$, and `tb.layer_grads` ($dW$, $dt$);
3. the penalty: $dt \mathrel{+}= -\alpha e^{-t}$ (`tb.threshold_penalty`);
4. $u$'s gradient: $V$ is known only after the backward pass, so $\beta V$ enters the **next** step's loss. $u$ gets `prev_grad_u` (the previous step's $\beta\,\partial V/\partial u$) only from epoch 2 on and never at batch index 0; on other steps $u$ has no gradient and is left as it is;
5. the backward mask `tb.backward_mask([dW], [u], scale=beta)`: the optimiser uses $g = dW \odot D$, and this step's $\beta\,\partial V/\partial u$ is returned for the next step;
6. clipping: with `norm` the L2 norm over every gradient of the step ($g$, $db$, $dt$ and, when present, $du$) together, multiply them all by `c = min(1, clip_norm / (norm + 1e-6))`;
7. plain SGD: $\theta \leftarrow \theta - \text{lr} \cdot c \cdot \text{grad}$ (no momentum, no weight decay here, so that only the order matters).

Write `train_step(p, X, y, prev_grad_u, epoch, index, hp)` with `p = {"W", "b", "t", "u"}` and `hp = {"lr", "alpha", "beta", "clip_norm"}`; return the new parameters (a new dict: do not modify `p`) and this step's $\beta\,\partial V/\partial u$. The checker compares it with the library's trainer order (`dfbst_np.train.trainer.Trainer` with momentum and weight decay off does the same).""",
        "imports": "from dfbst_np.exercises import check_train_step, softmax_cross_entropy\n",
        "functions": [("""def train_step(p, X, y, prev_grad_u, epoch, index, hp):
    \"\"\"One DFBST step; returns (new params dict, this step's beta * dV/du).\"\"\"
""", """    W, b, u = p["W"], p["b"], p["u"]
    M, t = tb.forward_mask(W, p["t"], "dfbst")                     # 1. mask, reset
    _, dY = softmax_cross_entropy(tb.masked_forward(X, W, M, b), y)  # 2. forward, loss
    A, _ = tb.masked_backward(dY, X, W, M)
    db = dY.sum(axis=0)
    dW, dt = tb.layer_grads(A, W, t, M, "dfbst")
    dt = dt + tb.threshold_penalty(t, hp["alpha"])[1]               # 3. penalty
    du = prev_grad_u if (epoch >= 2 and index != 0 and prev_grad_u is not None) else None   # 4.
    _, gs, _, grad_u = tb.backward_mask([dW], [u], scale=hp["beta"])                    # 5.
    grads = [gs[0], db, dt] + ([du] if du is not None else [])
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))              # 6. clip
    c = min(1.0, hp["clip_norm"] / (norm + 1e-6))
    lr = hp["lr"] * c                                               # 7. SGD
    new_u = u.copy() if du is None else u - lr * du
    return {"W": W - lr * gs[0], "b": b - lr * db, "t": t - lr * dt, "u": new_u}, grad_u[0]
""")],
        "check": "result = check_train_step(train_step)",
        "after": [("markdown", "With a correct step, train softmax regression on 2000 images of the committed Fashion-MNIST sample for two epochs; $u$ starts to move in epoch 2:"),
                  ("code", """if result:
    from dfbst_np.train.data import load_dataset, iterate_batches
    train, test = load_dataset("sample", train=True), load_dataset("sample", train=False)
    X_all = train.images[:2000].reshape(2000, -1).astype(np.float64)
    y_all = train.labels[:2000]
    rng = np.random.default_rng(0)
    p = {"W": 0.01 * rng.standard_normal((10, 784)), "b": np.zeros(10), "t": np.zeros(10), "u": np.zeros(10)}
    hp = {"lr": 0.1, "alpha": 5e-6, "beta": 0.1, "clip_norm": 1.0}
    prev = None
    for epoch in (1, 2):
        for index, (x, yb) in enumerate(iterate_batches(X_all, y_all, 64, np.random.default_rng([0, epoch]))):
            p, prev = train_step(p, x, yb, prev, epoch, index, hp)
        Xt = test.images.reshape(len(test.labels), -1).astype(np.float64)
        M, _ = tb.forward_mask(p["W"], p["t"], "dfbst")
        acc = (tb.masked_forward(Xt, p["W"], M, p["b"]).argmax(axis=1) == test.labels).mean()
        print(f"epoch {epoch}: test accuracy {acc:.3f}, density of M {M.mean():.3f}, mean u {p['u'].mean():.2e}")
        assert (p["u"].mean() > 0) == (epoch >= 2)      # u moves only from epoch 2 on
else:
    print("(runs once the check passes)")""")],
    },
]


HOW = ("Fill in the function below (replace the `raise NotImplementedError` line), run it, "
       "then run the check cell: it compares your function with `dfbst_np.textbook` on random "
       "and edge cases and names what is wrong. The package holds the answer; the check hides it while "
       "your function runs and names a call to it. Run the notebook from the top after a restart "
       "(Kernel > Restart & Run All) to be sure it holds.")

# The function each exercise asks for -> its checker and the names of its cases (one graded test each).
GRADED = {
    "forward_mask": ("check_forward_mask", [c.name for c in fm_ex._cases()]),
    "h": ("check_h", [c.name for c in gr_ex._h_cases()]),
    "layer_grads": ("check_layer_grads", [c.name for c in gr_ex._grad_cases()]),
    "backward_mask": ("check_backward_mask", [c.name for c in bm_ex._cases()]),
    "train_step": ("check_train_step", [c.name for c in ts_ex._cases()]),
}


def build(ex, solution: bool):
    cells = [new_markdown_cell(f"# {ex['title']}\n\n{ex['intro']}\n\n{HOW}"),
             new_code_cell(SETUP + ex["imports"])]
    for head, body in ex["functions"]:
        cells.append(new_code_cell(head + (body if solution else STUB)))
    cells.append(new_markdown_cell("**Check.** `PASSED` means every case agrees with the textbook; `NOT YET` names "
                                   "the first case that does not and, where it recognises the mistake, what it is."))
    cells.append(new_code_cell(ex["check"]))
    for kind, text in ex["after"]:
        cells.append(new_markdown_cell(text) if kind == "markdown" else new_code_cell(text))
    if solution:
        cells.append(new_markdown_cell("*Solutions only:* the answer above must pass (CI runs this notebook)."))
        cells.append(new_code_cell("assert result.passed" + (" and result_h.passed" if "result_h" in ex["check"] else "")))
    for k, cell in enumerate(cells):            # stable ids: regenerating changes nothing else
        cell.id = f"{ex['file'].split('_')[0]}-{k}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _name(head):
    return head.split("def ", 1)[1].split("(", 1)[0]


def build_master(ex):
    """The teacher's notebook in otter-grader's assign format (points: one per checker case)."""
    stem = ex["file"].split(".")[0]
    config = f"""# ASSIGNMENT CONFIG
name: {stem}
init_cell: true
check_all_cell: false
export_cell: false
run_tests: true
solutions_pdf: false
generate:
  pdf: false
  zips: false
tests:
  files: true
  ok_format: false"""
    cells = [new_raw_cell(config),
             new_markdown_cell(f"# {ex['title']}\n\n{ex['intro']}\n\n{HOW}"),
             new_code_cell(SETUP + ex["imports"])]
    for head, body in ex["functions"]:
        name = _name(head)
        checker, cases = GRADED[name]
        cells += [new_raw_cell(f"# BEGIN QUESTION\nname: {name}\npoints: {len(cases)}"),
                  new_markdown_cell(f"Write `{name}` below ({len(cases)} points: one per case of `{checker}`)."),
                  new_raw_cell("# BEGIN SOLUTION"),
                  new_code_cell(head + '    """ # BEGIN PROMPT\n' + STUB + '    """ # END PROMPT\n'
                                + "    # BEGIN SOLUTION NO PROMPT\n" + body + "    # END SOLUTION\n"),
                  new_raw_cell("# END SOLUTION"),
                  new_raw_cell("# BEGIN TESTS")]
        for k, case in enumerate(cases):
            # otter's exception-based test: one function of the learner's names, and its call
            cells.append(new_code_cell(
                f'""" # BEGIN TEST CONFIG\npoints: 1\nhidden: false\nsuccess_message: "case \'{case}\' passes"\n'
                f'""" # END TEST CONFIG\n'
                f"def test_case_{k}({name}):\n"
                f"    from dfbst_np.exercises import {checker}\n"
                f"    result = {checker}({name}, quiet=True)\n"
                f"    assert result.cases[{case!r}], result.message\n\n"
                f"test_case_{k}({name})"))
        cells += [new_raw_cell("# END TESTS"), new_raw_cell("# END QUESTION")]
    cells.append(new_markdown_cell("**Check.** `PASSED` means every case agrees with the textbook; `NOT YET` names "
                                   "the first case that does not and, where it recognises the mistake, what it is."))
    cells.append(new_code_cell(ex["check"]))
    for kind, text in ex["after"]:
        cells.append(new_markdown_cell(text) if kind == "markdown" else new_code_cell(text))
    for k, cell in enumerate(cells):
        cell.id = f"{ex['file'].split('_')[0]}-master-{k}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main():
    (ROOT / "solutions").mkdir(parents=True, exist_ok=True)
    (ROOT / "master").mkdir(parents=True, exist_ok=True)
    for ex in EXERCISES:
        for solution, folder in ((False, ROOT), (True, ROOT / "solutions")):
            nbformat.write(build(ex, solution), folder / ex["file"])
        nbformat.write(build_master(ex), ROOT / "master" / ex["file"])


if __name__ == "__main__":
    main()
