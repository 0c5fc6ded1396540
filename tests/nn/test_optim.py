"""SGD, Adam and MultiStepLR against torch.optim, step for step, in float64."""
import io

import numpy as np
import pytest

from dfbst_np.nn.optim import SGD, Adam, MultiStepLR
from tests.helpers import rel_err

import torch

SHAPES = {"fc.weight": (4, 3), "fc.bias": (4,), "fc.threshold": (4,), "fc.dthreshold": (4,)}
STEPS = 20
TOL = 1e-12


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def grad_schedule(steps=STEPS, seed=1):
    """Per step a dict of gradients; some parameters have none on some steps."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(steps):
        grads = {k: rng.standard_normal(shape) for k, shape in SHAPES.items()}
        if s % 3 == 0:          # like DFBST's u: no gradient at batch 0 of an epoch
            del grads["fc.dthreshold"]
        if s in (5, 6, 11):
            del grads["fc.bias"]
        out.append(grads)
    return out


def run_ours(make_opt, schedule, params=None):
    params = make_params() if params is None else params
    opt = make_opt(params)
    history = []
    for grads in schedule:
        opt.step({k: g.copy() for k, g in grads.items()})
        history.append({k: p.copy() for k, p in params.items()})
    return history


def run_torch(make_opt, schedule):
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in make_params().items()}
    opt = make_opt(list(tparams.values()))
    history = []
    for grads in schedule:
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy()) if k in grads else None
        opt.step()
        history.append({k: p.detach().numpy().copy() for k, p in tparams.items()})
    return history


def max_history_err(ours, ref):
    return max(rel_err(o[k], r[k]) for o, r in zip(ours, ref) for k in SHAPES)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=1e-2),
    dict(lr=0.1, momentum=0.9, weight_decay=1e-4),          # the reference trainer's
    dict(lr=0.05, momentum=0.5, dampening=0.1, weight_decay=1e-3),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
]


@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch(kw):
    schedule = grad_schedule()
    ours = run_ours(lambda p: SGD(p, **kw), schedule)
    ref = run_torch(lambda p: torch.optim.SGD(p, **kw), schedule)
    assert max_history_err(ours, ref) <= TOL


ADAM_CONFIGS = [
    dict(),
    dict(lr=1e-2, weight_decay=1e-2),
    dict(lr=1e-2, betas=(0.3, 0.99), eps=1e-6),   # 1 - beta1 >= 0.5: torch.lerp's other branch
]


@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_adam_matches_torch(kw):
    schedule = grad_schedule()
    ours = run_ours(lambda p: Adam(p, **kw), schedule)
    ref = run_torch(lambda p: torch.optim.Adam(p, **kw), schedule)
    assert max_history_err(ours, ref) <= TOL


def test_absent_gradient_leaves_parameter_and_state_untouched():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2)
    schedule = grad_schedule()
    u0 = params["fc.dthreshold"].copy()
    opt.step(schedule[0])                       # no gradient for u at step 0
    assert np.array_equal(params["fc.dthreshold"], u0)
    assert "fc.dthreshold" not in opt.state
    opt.step(schedule[1])
    buf = opt.state["fc.dthreshold"]["momentum_buffer"].copy()
    u1 = params["fc.dthreshold"].copy()
    # First step with a gradient: the buffer is the decayed gradient itself.
    assert np.array_equal(buf, schedule[1]["fc.dthreshold"] + 1e-2 * u0)
    opt.step(schedule[2])
    opt.step(schedule[3])                       # absent again
    assert "fc.dthreshold" not in schedule[3]
    u2 = params["fc.dthreshold"].copy()
    buf2 = opt.state["fc.dthreshold"]["momentum_buffer"].copy()
    opt.step(schedule[3])
    assert np.array_equal(params["fc.dthreshold"], u2)
    assert np.array_equal(opt.state["fc.dthreshold"]["momentum_buffer"], buf2)
    assert not np.array_equal(u1, u2)


def test_adam_counts_steps_per_parameter():
    params = make_params()
    opt = Adam(params)
    for grads in grad_schedule():
        opt.step(grads)
    assert int(opt.state["fc.weight"]["step"]) == STEPS
    assert int(opt.state["fc.dthreshold"]["step"]) == STEPS - 7     # absent on s % 3 == 0
    assert int(opt.state["fc.bias"]["step"]) == STEPS - 3


def npz_round_trip(state):
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("make_opt", [
    lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.2),
    lambda p: Adam(p, lr=1e-2, weight_decay=1e-3),
], ids=["sgd-nesterov", "sgd-dampening", "adam"])
def test_state_dict_round_trip_continues_identically(make_opt):
    schedule = grad_schedule()
    uninterrupted = run_ours(make_opt, schedule)

    params = make_params()
    opt = make_opt(params)
    for grads in schedule[:10]:
        opt.step(grads)
    saved_params = npz_round_trip(params)
    saved_opt = npz_round_trip(opt.state_dict())

    # A fresh optimiser with other hyperparameters and a state of its own:
    # loading must replace all of it.
    fresh = {k: v.copy() for k, v in saved_params.items()}
    opt2 = type(opt)(fresh, lr=123.0)
    opt2.step(schedule[0])
    for k in fresh:
        fresh[k][...] = saved_params[k]
    opt2.load_state_dict(saved_opt)
    assert opt2.lr == opt.lr
    resumed = run_ours(lambda p: opt2, schedule[10:], params=fresh)
    for a, b in zip(resumed, uninterrupted[10:]):
        for k in SHAPES:
            assert np.array_equal(a[k], b[k]), k


def test_state_dict_is_flat_arrays_without_pickles():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.step(grad_schedule()[0])
    sd = opt.state_dict()
    assert set(sd) == {"lr", "momentum", "dampening", "weight_decay", "nesterov",
                       "momentum_buffer.fc.weight", "momentum_buffer.fc.bias",
                       "momentum_buffer.fc.threshold"}
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["lr"].shape == () and sd["nesterov"].dtype == bool
    # Copies, not views of the live state.
    sd["momentum_buffer.fc.weight"][...] = 0
    assert opt.state["fc.weight"]["momentum_buffer"].any()
    asd = Adam(make_params()).state_dict()
    assert set(asd) == {"lr", "betas", "eps", "weight_decay"}


def test_load_state_dict_errors_are_named():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.step(grad_schedule()[1])
    sd = opt.state_dict()
    bad = dict(sd); del bad["lr"]
    with pytest.raises(KeyError, match="missing keys \\['lr'\\]"):
        opt.load_state_dict(bad)
    with pytest.raises(KeyError, match="surplus"):
        opt.load_state_dict(dict(sd, surplus=np.array(1.0)))
    with pytest.raises(KeyError, match="momentum_buffer.fc.nope"):
        opt.load_state_dict(dict(sd, **{"momentum_buffer.fc.nope": np.zeros(4)}))
    with pytest.raises(ValueError, match="momentum_buffer.fc.bias"):
        opt.load_state_dict(dict(sd, **{"momentum_buffer.fc.bias": np.zeros(5)}))
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.load_state_dict(dict(sd, lr=np.array(-1.0)))
    adam = Adam(params)
    adam.step(grad_schedule()[1])
    asd = adam.state_dict()
    del asd["exp_avg_sq.fc.weight"]
    with pytest.raises(KeyError, match="'fc.weight' is incomplete"):
        adam.load_state_dict(asd)


@pytest.mark.parametrize("kw, match", [
    (dict(lr=-0.1), "Invalid lr"),
    (dict(lr=0.1, momentum=-0.5), "Invalid momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), "Invalid weight_decay"),
    (dict(lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires"),
    (dict(lr=float("nan")), "Invalid lr"),
])
def test_sgd_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        SGD(make_params(), **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(lr=-1e-3), "Invalid lr"),
    (dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (dict(betas=(0.9, -0.1)), "beta parameter at index 1"),
    (dict(eps=-1e-8), "Invalid eps"),
    (dict(weight_decay=-1.0), "Invalid weight_decay"),
])
def test_adam_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Adam(make_params(), **kw)


def test_params_must_be_a_nonempty_dict_of_float_arrays():
    with pytest.raises(ValueError, match="empty"):
        SGD({}, lr=0.1)
    with pytest.raises(TypeError, match="dict"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="'n'"):
        SGD({"n": np.zeros(3, dtype=np.int64)}, lr=0.1)


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
def test_bad_gradients_are_named_and_change_nothing(opt_cls):
    params = make_params()
    before = {k: v.copy() for k, v in params.items()}
    opt = opt_cls(params, lr=0.1)
    good = grad_schedule()[1]
    cases = [
        ({"fc.bias": np.zeros(5)}, ValueError, "'fc.bias' has shape \\(5,\\)"),
        ({"fc.bias": np.zeros(4, dtype=np.float32)}, ValueError, "'fc.bias' .*float32"),
        ({"fc.threshold": np.array([0, np.nan, 0, 0])}, FloatingPointError, "'fc.threshold' contains NaN"),
        ({"fc.threshold": np.array([0, np.inf, 0, 0])}, FloatingPointError, "'fc.threshold' contains inf"),
        ({"fc.extra": np.zeros(4)}, KeyError, "fc.extra"),
        ({"fc.bias": [0.0] * 4}, TypeError, "'fc.bias'"),
    ]
    for bad, err, match in cases:
        with pytest.raises(err, match=match):
            opt.step(dict(good, **bad))
    for k in params:
        assert np.array_equal(params[k], before[k])
    assert opt.state == {}
    # check_finite=False (a caller that checked already) skips only the NaN/inf scan
    with pytest.raises(ValueError, match="'fc.bias' has shape"):
        opt.step(dict(good, **{"fc.bias": np.zeros(5)}), check_finite=False)
    opt.step(dict(good, **{"fc.threshold": np.array([0, np.nan, 0, 0])}), check_finite=False)
    assert np.isnan(params["fc.threshold"][1]) and np.isfinite(params["fc.weight"]).all()


def test_lr_set_by_hand_is_checked_at_step():
    opt = SGD(make_params(), lr=0.1)
    opt.lr = -1.0
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.step(grad_schedule()[1])


@pytest.mark.parametrize("milestones, gamma", [
    ((80, 120), 0.1), ((2, 4, 4), 0.5), ((5, 1, 3), 0.3), ((), 0.1)])
def test_multistep_lr_sequence_matches_torch(milestones, gamma):
    opt = SGD(make_params(), lr=0.1, momentum=0.9)
    sched = MultiStepLR(opt, milestones, gamma)
    tp = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    topt = torch.optim.SGD(tp, lr=0.1, momentum=0.9)
    tsched = torch.optim.lr_scheduler.MultiStepLR(topt, list(milestones), gamma)
    ours, ref = [opt.lr], [topt.param_groups[0]["lr"]]
    for _ in range(160):
        sched.step()
        topt.step()         # a no-op (no gradients) that keeps torch from warning
        tsched.step()
        ours.append(opt.lr)
        ref.append(topt.param_groups[0]["lr"])
        assert sched.get_last_lr() == tsched.get_last_lr()[0]
    assert ours == ref          # torch's own recursion, so equal to the last bit
    closed = [sched.closed_form_lr(e) for e in range(161)]
    assert rel_err(np.array(ours), np.array(closed)) <= TOL


def test_sgd_with_schedule_matches_torch():
    schedule = grad_schedule(steps=21)
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = MultiStepLR(opt, (2, 4), 0.1)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in make_params().items()}
    topt = torch.optim.SGD(list(tparams.values()), lr=0.1, momentum=0.9, weight_decay=1e-4)
    tsched = torch.optim.lr_scheduler.MultiStepLR(topt, [2, 4], 0.1)
    for s, grads in enumerate(schedule):
        opt.step(grads)
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy()) if k in grads else None
        topt.step()
        if s % 3 == 2:          # three steps per epoch
            sched.step()
            tsched.step()
    for k in SHAPES:
        assert rel_err(params[k], tparams[k].detach().numpy()) <= TOL


def test_multistep_lr_state_dict_round_trip():
    def run(interrupt_at=None):
        opt = SGD(make_params(), lr=0.1)
        sched = MultiStepLR(opt, (3, 6), 0.5)
        lrs = []
        for epoch in range(10):
            if epoch == interrupt_at:
                osd, ssd = npz_round_trip(opt.state_dict()), npz_round_trip(sched.state_dict())
                opt = SGD(make_params(), lr=0.1)
                sched = MultiStepLR(opt, (100,), 0.9)
                opt.load_state_dict(osd)
                sched.load_state_dict(ssd)
            sched.step()
            lrs.append(opt.lr)
        return lrs, sched.last_epoch
    assert run() == run(interrupt_at=4)


def test_multistep_lr_errors():
    opt = SGD(make_params(), lr=0.1)
    for milestones in [(0,), (-1, 3), (1.5,), (True,)]:
        with pytest.raises(ValueError, match="milestones"):
            MultiStepLR(opt, milestones)
    with pytest.raises(ValueError, match="gamma"):
        MultiStepLR(opt, (1,), gamma=0.0)
    sched = MultiStepLR(opt, (1,))
    sd = sched.state_dict()
    del sd["milestones"]
    with pytest.raises(KeyError, match="milestones"):
        sched.load_state_dict(sd)
