"""GMP, SET and RigL through the Trainer: fast equals textbook, and the invariants of SPEC 8.

Both implementations train LeNet-300-100 and LeNet-5 (float64) over a
schedule short enough for several topology updates (update_interval 3 steps,
epochs of 4 steps): after every step the parameters agree to 1e-10, the
masks are identical, and the momentum buffers agree. Along the way: weights
off the mask and their momentum are exactly 0; SET and RigL keep nnz(M)
fixed and change the mask only when their schedule says; GMP reaches its
target density at update_end; RigL computes the dense weight gradient on its
update steps only, and the ledger counts what each step computed.
"""
import math

import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np import methods, textbook as tb
from dfbst_np.models import build
from dfbst_np.sparse.masked import masked_layers
from tests.helpers import rel_err

SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28)}
SPE, EPOCHS = 4, 4
OPTIONS = {"gmp": dict(update_interval=3, prune_start=0.1, update_end=0.6, density=0.2),
           "set": dict(zeta=0.3, density=0.2),
           "rigl": dict(update_interval=3, update_end=0.75, density=0.2)}


def pair(model_name, method, kernel_path=None, **options):
    out = []
    for kind in ("fast", "textbook"):
        impl = methods.get(method).implementation(kind).configured(**options)
        model = build(model_name, method=impl, dtype=np.float64, rng=np.random.default_rng(3),
                      kernel_path=kernel_path if kind == "fast" else None)
        out.append((model, dn.Trainer(model, lr=0.05, steps_per_epoch=SPE, epochs=EPOCHS)))
    return out


def momentum(trainer, name, shape):
    buf = trainer.optimizer.state_dict().get(f"momentum_buffer.{name}.weight")
    return np.zeros(shape) if buf is None else buf.reshape(shape)


@pytest.mark.parametrize("kernel_path", ["sparse", "dense"])
@pytest.mark.parametrize("model_name", ["lenet300_100", "lenet_5"])
@pytest.mark.parametrize("method", ["gmp", "set", "rigl"])
def test_fast_equals_textbook_through_training(model_name, method, kernel_path):
    # the sparse path reuses a layer's CSR structure while its mask is unchanged:
    # a topology update must be seen by it
    (m_f, t_f), (m_t, t_t) = pair(model_name, method, kernel_path, **OPTIONS[method])
    rng = np.random.default_rng(0)
    total = SPE * EPOCHS
    keeps = [np.array(l.state.keep) for _, l in masked_layers(m_f)]
    nnz0 = [int(k.sum()) for k in keeps]
    changed_at = []
    for epoch in range(1, EPOCHS + 1):
        for index in range(SPE):
            x, y = rng.random((6,) + SHAPES[model_name]), rng.integers(0, 10, 6)
            s_f = t_f.step(x, y, epoch=epoch, index=index)
            s_t = t_t.step(x, y, epoch=epoch, index=index)
            step = (epoch - 1) * SPE + index + 1
            assert rel_err(s_t.loss, s_f.loss) <= 1e-10
            for key, p in m_f.params.items():
                assert rel_err(m_t.params[key], p) <= 1e-10, (step, key)
            changed = False
            for k, ((name, lf), (_, lt)) in enumerate(zip(masked_layers(m_f), masked_layers(m_t))):
                keep = lf.state.keep
                np.testing.assert_array_equal(keep, lt.state.keep)
                for m, t in ((m_f, t_f), (m_t, t_t)):
                    w = m.params[f"{name}.weight"].reshape(keep.shape)
                    assert not w[~keep].any(), (step, name)                        # exactly 0
                    assert not momentum(t, name, keep.shape)[~keep].any(), (step, name)
                assert rel_err(momentum(t_t, name, keep.shape), momentum(t_f, name, keep.shape)) <= 1e-10
                changed |= not np.array_equal(keep, keeps[k])
                if method != "gmp":
                    assert int(keep.sum()) == nnz0[k]
                keeps[k] = np.array(keep)
                mode = "exact" if method == "gmp" else lf.last_weight_grad
                assert lf.last_weight_grad == lt.last_weight_grad == mode
            if changed:
                changed_at.append(step)
            # the ledger: what this step computed
            numel = sum(l.weight.size for _, l in masked_layers(m_f))
            wg = sum(2 * l.rows * (l.weight.size if l.last_weight_grad == "exact" else l.mask_nnz)
                     for _, l in masked_layers(m_f))
            assert s_f.cost.weight_grad_flops_exact == s_f.cost.weight_grad_flops_ideal == wg
            nnz_m = sum(l.mask_nnz for _, l in masked_layers(m_f))
            assert s_f.cost.nnz_m == nnz_m and (nnz_m <= numel if method == "gmp" else nnz_m < numel)
        t_f.end_epoch()
        t_t.end_epoch()
    if method == "set":
        # after epochs 1, 2, 3, applied before the next epoch's first step (4 is the last)
        assert changed_at == [SPE + 1, 2 * SPE + 1, 3 * SPE + 1]
    if method == "rigl":
        end = round(0.75 * total)
        updates = [t for t in range(1, total + 1) if t % 3 == 0 and t < end]
        assert set(changed_at) <= set(updates) and len(changed_at) >= 2
    if method == "gmp":
        start, end = round(0.1 * total), round(0.6 * total)
        assert (start, end) == (2, 10)
        # prunes after steps 2 (density still 1: nothing), 5, 8 and 10 (the end)
        assert changed_at == [5, 8, 10]
        finals = tb.erk_densities([l.weight.shape for _, l in masked_layers(m_f)], 0.2)
        for (_, layer), d in zip(masked_layers(m_f), finals):
            assert int(layer.state.keep.sum()) == round(d * layer.weight.size)


def test_rigl_pays_dense_gradients_on_update_steps_only():
    (model, trainer), _ = pair("lenet300_100", "rigl", update_interval=2, update_end=0.75)
    rng = np.random.default_rng(1)
    modes = []
    for epoch in range(1, EPOCHS + 1):
        for index in range(SPE):
            st = trainer.step(rng.random((5, 1, 28, 28)), rng.integers(0, 10, 5), epoch=epoch, index=index)
            layer = masked_layers(model)[0][1]
            modes.append(layer.last_weight_grad)
            dense = layer.last_weight_grad == "exact"
            assert st.bdensity["fc1"] == (1.0 if dense else pytest.approx(layer.density, rel=1e-12))
            assert layer.state.dense_grad is None           # used and released at the update
        trainer.end_epoch()
    t_end = round(0.75 * SPE * EPOCHS)
    assert [t for t, m in enumerate(modes, 1) if m == "exact"] == [t for t in range(2, t_end, 2)]


def test_erk_and_uniform_initial_masks():
    for distribution in ("erk", "uniform"):
        impl = methods.get("set").fast.configured(density=0.1, distribution=distribution)
        model = build("lenet_5", method=impl)
        layers = masked_layers(model)
        shapes = [l.weight.shape for _, l in layers]
        want = (tb.erk_densities(shapes, 0.1) if distribution == "erk" else [0.1] * 4)
        for (_, layer), d in zip(layers, want):
            assert int(layer.state.keep.sum()) == round(d * layer.weight.size)
            assert not layer.weight2d[~layer.state.keep].any()
    # ERK keeps LeNet-5's first conv and last layer dense at 0.1
    assert [round(d, 3) for d in tb.erk_densities(shapes, 0.1)][0::3] == [1.0, 1.0]


def test_gmp_starts_dense_and_needs_the_run_length():
    model = build("lenet300_100", method="gmp")
    assert all(layer.state.keep.all() for _, layer in masked_layers(model))
    trainer = dn.Trainer(model)             # no steps_per_epoch: no schedule
    with pytest.raises(ValueError, match="gmp needs the run's length"):
        trainer.step(np.zeros((2, 1, 28, 28), np.float32), np.array([0, 1]), epoch=1, index=0)
    trainer = dn.Trainer(build("lenet300_100", method="rigl"))
    with pytest.raises(ValueError, match="rigl needs the run's length"):
        trainer.step(np.zeros((2, 1, 28, 28), np.float32), np.array([0, 1]), epoch=1, index=0)


@pytest.mark.parametrize("method, options, message", [
    ("set", dict(density=0.0), "density must be a number in"),
    ("set", dict(density=1.5), "density must be a number in"),
    ("rigl", dict(distribution="erdos"), "distribution must be one of"),
    ("set", dict(zeta=1.0), "zeta must be a number in"),
    ("rigl", dict(drop_fraction=-0.1), "drop_fraction must be"),
    ("gmp", dict(update_interval=0), "update_interval must be a positive integer"),
    ("gmp", dict(update_interval=2.5), "update_interval must be a positive integer"),
    ("gmp", dict(prune_start=0.7, update_end=0.6), "prune_start .* must not come after"),
    ("rigl", dict(update_end=0.0), "update_end must be"),
    ("set", dict(drop_fraction=0.2), "unknown option 'drop_fraction'"),
    ("gmp", dict(zeta=0.2), "unknown option 'zeta'"),
])
def test_bad_options_are_refused(method, options, message):
    with pytest.raises(ValueError, match=message):
        methods.get(method).fast.configured(**options)


def test_configured_is_a_copy_of_the_same_method():
    base = methods.get("rigl").textbook
    other = base.configured(density=0.05)
    assert other.method is base.method and other.kind == "textbook"
    assert other.options["density"] == 0.05 and base.options["density"] == 0.1
    assert methods.implementation(other) is other


def test_checkpoint_state_round_trip():
    (model, trainer), _ = pair("lenet_5", "set", density=0.2)
    saved = trainer.state_dict()
    assert set(saved) == {f"{k}.{n}" for n, _ in masked_layers(model) for k in ("keep", "seed")}
    other_model = build("lenet_5", method=methods.get("set").fast.configured(density=0.2),
                        rng=np.random.default_rng(99), dtype=np.float64)
    other = dn.Trainer(other_model, steps_per_epoch=SPE, epochs=EPOCHS)
    other.load_state_dict(saved)
    for (_, a), (_, b) in zip(masked_layers(model), masked_layers(other_model)):
        np.testing.assert_array_equal(a.state.keep, b.state.keep)
        assert a.state.seed == b.state.seed
    bad = dict(saved)
    bad["keep.conv1"] = bad["keep.conv1"].astype(np.float32)
    with pytest.raises(ValueError, match="keep.conv1: expected a bool array"):
        other.load_state_dict(bad)
    del bad["keep.conv1"]
    with pytest.raises(KeyError, match="keep.conv1"):
        other.load_state_dict(bad)
