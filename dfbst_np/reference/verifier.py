r"""Verify someone else's PyTorch DST/DFBST code against dfbst_np (SPEC section 7).

>>> report = verify(torch_model, step, batches, method="dfbst")   # doctest: +SKIP
>>> report.ok, report.first, report.coverage                       # doctest: +SKIP
>>> print(report)                                                  # doctest: +SKIP

``step(model, x, y, epoch, index)`` is the user's own training step on torch
tensors (forward, loss, backward, their backward mask, clipping, optimiser
update, in place); nothing in it changes for verification. Every step of the
schedule is compared stage by stage, in the order of one step:

========== ================================================================
forward    ``logits`` and ``loss`` (the scalar the step calls backward on)
grad       each parameter's gradient as autograd produced it, before the
           backward mask and clipping (tensor hooks; u only on steps with
           the beta term)
mask       M and D: ``NAME.mask`` / ``NAME.dmask`` attributes, or a name map
used_grad  the ``.grad`` the optimiser applied (after D and clipping)
update     parameters, buffers and momentum buffers after the step
========== ================================================================

**The same state, every step.** Before each step dfbst_np's twin is loaded
with the torch model's parameters, buffers and momentum buffers as they are
just before that step, and runs the same batch with the same settings. A
divergence therefore never compounds: each step is judged on its own, from
the state the user's code was really in, and the first divergence is where
the user's rule first differs from SPEC's, not where earlier rounding has
drifted. (What dfbst_np carries from step to step itself is only its own
V_prev, computed on the previous step from that step's torch state, and the
learning-rate schedule of ``settings``.)

The first divergence is the first quantity outside tolerance in step order,
then stage order, then layer order (:class:`~.verdict.Divergence`), with the
count of mismatched entries, the worst entry and both values there, and a
one-line reading where the pattern is clear.

``stress=True`` first moves the torch model into every branch of the
algorithm: thresholds t of both signs in every masked layer (|t_i| at the
30th percentile of row i's |W|, signs alternating by row), u > 0
(u_i = 0.5 / fan_in, so that D drops the smaller half of a row's
normalised gradient), inputs scaled by :data:`STRESS_INPUT_SCALE` so that
clipping fires, and one layer (the second masked one) with thresholds above
every weight so that the reset rule fires. Without it the natural start
(t = 0, u = 0, small gradients) leaves whole rules untested: ``coverage``
records which branches fired and the report warns about those that never
did.

Tolerance: the run is in float64; an entry agrees when
|ours - theirs| <= rtol |ours| + atol (:data:`~.verdict.RTOL` = 1e-6,
:data:`~.verdict.ATOL` = 1e-12, the floor for entries whose true value is
0; ``floors`` overrides it per quantity); masks must be identical. Under
float32 masks dt and du may also differ by the rounding float32 masks allow
in a sum that cancels (:mod:`.rounding`), in every quantity that error
reaches within the step. The twin
reproduces the torch model's mask dtype (float32 masks, as the authors'
``.float()`` makes them, switch ``float32_masks`` on), detected from the
first step's masks.
"""
from __future__ import annotations

import traceback
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from .. import models as np_models
from .. import methods
from ..sparse.masked import masked_layers as np_masked_layers
from ..train.trainer import Trainer
from . import rounding
from .capture import StepCapture
from .layers import METHODS as REFERENCE_METHODS
from .coverage import Coverage
from .stress import STRESS_INPUT_SCALE, apply_stress, masked_layer_names
from .twin import TraceError, TwinError, twin_from_torch
from .verdict import ATOL, RTOL, STAGES, Divergence, VerifyReport, compare_entries, layer_of
from .verify_inputs import (NameMap, StepError, VerifyError, check_batches, check_number,
                            check_schedule, check_settings, default_settings, mapped, shapes_of,
                            short_list, state_difference)

__all__ = ["verify", "VerifyError", "StepError", "DEFAULT_SCHEDULE", "STRESS_INPUT_SCALE",
           "RTOL", "ATOL", "default_settings", "apply_stress"]

#: (epoch, batch index) of each verified step: epoch 1 and 2, index 0 and not
#: (the beta term off, then on), and epoch 3 index 0 (off right after on:
#: u must not move, with no gradient, not even by momentum or weight decay).
DEFAULT_SCHEDULE = ((1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0))
# the parameter that names each built-in architecture, and its number of classes
_ARCH_KEYS = {name: m.last_weight for name, m in np_models.REGISTRY.items()}

#: How messages name verify's options, for each audience: the Python API's
#: arguments, or the command line's flags (a CLI user has no ``name_map=``).
PHRASES = {
    "python": dict(stress="verify(..., stress=True)", f32_on="float32_masks=True",
                   f32_off="float32_masks=False",
                   name_map="name_map={your name: dfbst_np name}",
                   prefix="name_map={{{!r}: ''}}", np_model="np_model= (a hand-built twin)",
                   float64="pass model.double()"),
    "cli": dict(stress="--stress", f32_on="--float32-masks on", f32_off="--float32-masks off",
                name_map="--name-map YOUR_NAME=DFBST_NP_NAME,...", prefix="--name-map {}=",
                np_model="a hand-built twin (Python API only)", float64="the CLI casts it"),
}


def build_twin(shapes: Mapping[str, tuple], method: str, float32_masks: bool,
               say: Mapping[str, str] = PHRASES["python"]):
    """The built-in dfbst_np model whose state-dict names and shapes are ``shapes``.

    Returns ``(architecture name, model)``; raises :class:`VerifyError` naming
    the missing and extra parameters of the closest architecture otherwise.
    """
    closest = None
    for arch, key in _ARCH_KEYS.items():
        # the architecture's last layer, under its own name or under a prefix
        found = [n for n in shapes if (n == key or n.endswith("." + key)) and len(shapes[n]) == 2]
        if not found:
            continue
        model = np_models.build(arch, method=method, num_classes=int(shapes[found[0]][0]),
                                dtype=np.float64, float32_masks=float32_masks)
        diff = state_difference(shapes_of(model.state_dict()), shapes)
        if not diff:
            return arch, model
        prefix = found[0][:-len(key) - 1]
        hint = say["prefix"].format(prefix) if prefix else say["name_map"]
        closest = closest or (arch, f"{diff}; pass {hint} or use {say['np_model']}")
    if closest is None:
        raise VerifyError(
            f"verify: the torch model matches no built-in architecture ({', '.join(_ARCH_KEYS)}, "
            f"method {method!r}): none of {sorted(_ARCH_KEYS.values())} is among its parameters "
            f"({short_list(list(shapes))}); pass {say['name_map']} or use {say['np_model']}")
    arch, diff = closest
    raise VerifyError(f"verify: the torch model does not match dfbst_np's {arch} with method "
                      f"{method!r}: {diff}")


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame of a traceback (the user's code, usually)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


# -- the run ----------------------------------------------------------------
def verify(torch_model: nn.Module, step: Callable, batches, method: str = "dfbst",
           settings: Optional[Mapping] = None, schedule=DEFAULT_SCHEDULE, np_model=None,
           name_map: Optional[Mapping[str, str]] = None, stress: bool = False,
           end_epoch: Optional[Callable] = None, *, rtol: float = RTOL, atol: float = ATOL,
           floors: Optional[Mapping[str, float]] = None,
           float32_masks: Optional[bool] = None, audience: str = "python") -> VerifyReport:
    """Run the user's ``step`` on the schedule and compare every stage with dfbst_np.

    Parameters
    ----------
    torch_model : torch.nn.Module
        The user's model, float64. It is trained in place.
    step : callable
        ``step(model, x, y, epoch, index)`` on torch tensors (x float64
        (N, C, H, W), y int64 (N,)): one full training step, in place.
    batches : list of (x, y)
        Arrays or tensors; entry k of the schedule runs on batch k modulo
        ``len(batches)``; images are cast to float64.
    method : {"dfbst", "dst", "dense"}
    settings : dict, optional
        lr, momentum, weight_decay, alpha, beta, clip_norm (None: no
        clipping), milestones, gamma: the user's hyperparameters. Missing
        keys take :func:`default_settings` of ``method``.
    schedule : list of (epoch, index)
        Epochs count from 1 and never decrease; indices from 0.
    np_model : dfbst_np model, optional
        The twin; default: the built-in architecture whose state-dict names
        and shapes match the torch model's (after ``name_map``).
    name_map : dict, optional
        {torch name: dfbst_np name} for parameters, buffers, modules (a prefix)
        and mask attributes (``{"net.0.M": "fc1.mask"}``).
    stress : bool
        First move the model into every branch (module docstring).
    end_epoch : callable, optional
        Called (with no arguments) each time the epoch number increases, as
        many times as it increased; dfbst_np's schedule steps with it.
    rtol, atol : float
        Tolerances (see :mod:`.verdict`); ``floors`` maps quantity names
        (``"classifier.0.bias"``) to their own absolute floor.
    float32_masks : bool, optional
        Whether the twin rounds the gradients into its masks to float32
        (given: set on every masked layer of the twin, ``np_model`` included).
        None: as the torch forward makes them, layer by layer (a float32
        tensor made inside a masked layer of a float64 model is its mask);
        the report's header says which was used and where it came from.
    audience : {"python", "cli"}
        How messages name the options (``stress=True`` or ``--stress``).

    Returns
    -------
    VerifyReport
        ``.ok``, ``.first``, ``.coverage``, ``.rows``; ``print(report)``.

    Raises
    ------
    VerifyError
        Bad input: the names, shapes or dtype of the model, the schedule,
        the batches or the settings. :class:`StepError` (a VerifyError)
        when the user's step raises.
    """
    if not isinstance(torch_model, nn.Module):
        raise VerifyError(f"verify: torch_model must be a torch.nn.Module, got {type(torch_model).__name__}")
    if not callable(step):
        raise VerifyError(f"verify: step must be callable as step(model, x, y, epoch, index), "
                          f"got {type(step).__name__}")
    if method not in REFERENCE_METHODS:
        raise VerifyError(f"verify: method must be one of {', '.join(map(repr, REFERENCE_METHODS))} "
                          f"(the methods the PyTorch reference implements), got {method!r}")
    if audience not in PHRASES:
        raise VerifyError(f"verify: audience must be one of {list(PHRASES)}, got {audience!r}")
    say = PHRASES[audience]
    rtol, atol = check_number(rtol, "rtol"), check_number(atol, "atol")
    floors = {str(k): check_number(v, f"floors[{k!r}]") for k, v in dict(floors or {}).items()}
    if float32_masks is not None and not isinstance(float32_masks, (bool, np.bool_)):
        raise VerifyError(f"verify: float32_masks must be True, False or None, got {float32_masks!r}")
    bad_dtype = [n for n, p in torch_model.named_parameters() if p.dtype != torch.float64]
    if bad_dtype:
        raise VerifyError(f"verify: verification runs in float64 and {bad_dtype[0]} is "
                          f"{dict(torch_model.named_parameters())[bad_dtype[0]].dtype}; "
                          f"{say['float64']}")
    run = _Run(torch_model, step, check_batches(batches), method, check_settings(method, settings),
               check_schedule(schedule), np_model, NameMap(name_map), end_epoch, rtol, atol,
               floors, float32_masks, say)
    if stress:
        run.stress()
    return run.run()


class _Run:
    """One verification: the torch side, the twin, and what was found."""

    def __init__(self, torch_model, step, batches, method, settings, schedule, np_model, names,
                 end_epoch, rtol, atol, floors, float32_masks, say):
        self.say = say
        self.warnings: List[str] = []
        self.torch_model, self.step, self.batches = torch_model, step, batches
        self.method, self.settings, self.schedule = method, settings, schedule
        self.masked = methods.get(method).threshold_mask
        self.learns_u = methods.get(method).learns_backward_mask
        self.names, self.end_epoch = names, end_epoch
        self.rtol, self.atol, self.floors = rtol, atol, floors
        self.float32_masks = float32_masks
        self.params = mapped(names, torch_model.named_parameters())
        self.state_names = list(mapped(names, torch_model.state_dict().items()))
        self.mask_paths = names.mask_paths(torch_model)
        self.arch, self.np_model, self.trainer = None, np_model, None
        self.f32_source = "passed" if float32_masks is not None else None
        if np_model is not None:
            diff = state_difference(shapes_of(np_model.state_dict()), self._torch_shapes())
            if diff:
                raise VerifyError(f"verify: the torch model does not match np_model: {diff}")
            dtypes = {str(v.dtype) for v in np_model.params.values()}
            if dtypes != {"float64"}:
                raise VerifyError(f"verify: np_model's parameters are {', '.join(sorted(dtypes))}; "
                                  "verification runs in float64: build your twin with dtype=np.float64")
            self.arch = f"{type(np_model).__name__} (yours)"
            if float32_masks is not None:
                # a model's settings are given when it is made: verify never changes them
                other = [n for n, layer in np_masked_layers(np_model)
                         if layer.float32_masks != bool(float32_masks)]
                if other:
                    raise VerifyError(
                        f"verify: float32_masks={bool(float32_masks)} but np_model's masked "
                        f"layers {short_list(other, 4)} were built with float32_masks="
                        f"{not float32_masks}: build np_model with float32_masks="
                        f"{bool(float32_masks)}, or leave float32_masks out")
            else:
                self.f32_source = "your np_model's"
        else:
            # fail on names before running any of the user's code; the mask
            # dtype is read from a probe forward on a copy of the model
            self.arch, self._twin, self.f32_layers = self._build_twin(float32_masks)
        self.input_scale = 1.0
        self.stressed: Dict[str, str] = {}
        self.rows: List[Divergence] = []
        self.first: Optional[Divergence] = None
        self.coverage: Dict[str, bool] = {}
        self.prev_V: Optional[float] = None
        self.prev_masks: Dict[str, np.ndarray] = {}

    def _mask_paths(self) -> List[str]:
        """The torch paths of M and D, found anew (a step may create ``dmask`` as it runs)."""
        self.mask_paths = self.names.mask_paths(self.torch_model)
        return list(self.mask_paths)

    def _torch_shapes(self) -> Dict[str, tuple]:
        return shapes_of(mapped(self.names, self.torch_model.state_dict().items()))

    def _build_twin(self, float32_masks):
        """(description, twin, {layer: float32 seen}): traced from the torch model, else a built-in."""
        x = torch.from_numpy(self.batches[0][0])
        fallback = None
        try:
            twin, seen = twin_from_torch(self.torch_model, x, self.method, float32_masks)
        except TraceError as e:
            fallback = str(e)
        except TwinError as e:
            raise VerifyError(f"{e} (for an unusual model: {self.say['np_model']})") from None
        else:
            diff = state_difference(shapes_of(twin.state_dict()), self._torch_shapes())
            if not diff:
                return "built from your model's modules", twin, seen
        # a name map that renames parameters: the names are the built-in models'
        try:
            arch, model = build_twin(self._torch_shapes(), self.method, bool(float32_masks), self.say)
        except VerifyError as e:
            if fallback:
                raise VerifyError(f"{fallback}, and {str(e)[len('verify: '):]}") from None
            raise
        if fallback:
            self.warnings.append(f"{fallback[len('verify: '):]}: the forward order is taken from "
                                 f"dfbst_np's {arch}, which has your model's names and shapes")
        return f"dfbst_np's {arch}", model, None

    def stress(self) -> None:
        if self.masked:
            self.stressed = apply_stress(self.params, self.method)
        self.input_scale = STRESS_INPUT_SCALE

    # -- torch side --------------------------------------------------------
    def _torch_state(self) -> Dict[str, np.ndarray]:
        sd = mapped(self.names, self.torch_model.state_dict().items())
        return {k: v.detach().cpu().numpy().copy() for k, v in sd.items()}

    def _theirs(self, cap: StepCapture) -> Dict[str, Dict[str, np.ndarray]]:
        def np_dict(d):
            return {self.names(k): v.cpu().numpy() for k, v in d.items()}
        loss = cap.loss
        loss = float(loss) if loss is not None else cap.returned_loss()
        forward = {}
        if cap.logits is not None:
            forward["logits"] = cap.logits.cpu().numpy()
        if loss is not None:
            forward["loss"] = np.array(loss)
        update = self._torch_state()
        update.update({f"{self.names(k)}.momentum_buffer": v.cpu().numpy()
                       for k, v in cap.momentum_after.items()})
        masks = {self.mask_paths[p]: v.cpu().numpy() for p, v in cap.masks.items()
                 if p in self.mask_paths}
        return {"forward": forward, "grad": np_dict(cap.grads), "mask": masks,
                "used_grad": np_dict(cap.used_grads or {}), "update": update,
                "momentum_before": np_dict(cap.momentum_before),
                "mask_dtypes": {self.mask_paths[p]: v.dtype for p, v in cap.masks.items()
                                if p in self.mask_paths}}

    # -- dfbst_np side -------------------------------------------------------
    def _ensure_twin(self, mask_dtypes) -> None:
        if self.trainer is not None:
            return
        if self.np_model is None:
            self.np_model = self._twin
            if self.float32_masks is not None:
                pass                                # passed: given to the twin when it was built
            elif self.f32_layers is not None:
                self.f32_source = "as your forward makes them"
            elif mask_dtypes:
                self.f32_source = "as your exposed masks are"
                if any(dt == torch.float32 for dt in mask_dtypes.values()):
                    # the built-in twin was made with float64 masks: make it anew
                    _, self.np_model = build_twin(self._torch_shapes(), self.method, True, self.say)
            elif self.masked:
                self.f32_source = "assumed"
                self.warnings.append(
                    "the dtype of your masks is unknown (no masks exposed, forward not traced): "
                    f"float64 masks assumed; if they are float32, pass {self.say['f32_on']}")
        s = self.settings
        self.trainer = Trainer(self.np_model, lr=s["lr"], momentum=s["momentum"],
                               weight_decay=s["weight_decay"], alpha=s["alpha"], beta=s["beta"],
                               clip_norm=s["clip_norm"], milestones=tuple(s["milestones"]),
                               gamma=s["gamma"])
        self.layer_rank = {name: k for k, (name, _) in enumerate(self.np_model.named_modules())}

    def _load_twin(self, before, momentum_before) -> None:
        self.np_model.load_state_dict(before)
        opt = self.trainer.optimizer
        state = {k: v for k, v in opt.state_dict().items() if not k.startswith("momentum_buffer.")}
        if self.settings["momentum"] != 0:
            state.update({f"momentum_buffer.{k}": v for k, v in momentum_before.items()
                          if k in opt.params})
        opt.load_state_dict(state)

    def _ours(self, x, y, epoch, index):
        trace: Dict[str, Dict[str, np.ndarray]] = {}

        def record(stage, values):
            trace[stage] = values
        try:
            stats = self.trainer.step(x, y, epoch=epoch, index=index, trace=record)
        except FloatingPointError as e:
            raise VerifyError(f"verify: dfbst_np cannot run epoch {epoch}, index {index} from your "
                              f"model's state: {e}") from e
        forward = trace["forward"]
        logits = forward["logits"]
        if getattr(self.np_model, "output_log_softmax", False):
            # your forward returns log_softmax(z): compare that (same cross-entropy)
            shifted = logits - logits.max(axis=1, keepdims=True)
            logits = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        trace["forward"] = {"logits": logits, "loss": forward["loss"]}
        params = set(self.np_model.params)
        trace["update"].update({k: np.array(v) for k, v in self.np_model.state_dict().items()
                                if k not in params})
        return trace, stats

    # -- comparing -----------------------------------------------------------
    def _order(self, names):
        rank = self.layer_rank
        return sorted(names, key=lambda q: rank.get(layer_of(q), len(rank)) if layer_of(q) else -1)

    def _compare(self, epoch, index, ours, theirs, slack) -> List[Divergence]:
        rows = []
        for stage in STAGES:
            a, b = ours.get(stage, {}), theirs.get(stage, {})
            names = list(a) + [k for k in b if k not in a]
            for q in self._order(names):
                if stage == "mask" and q not in b:
                    self.unexposed.add(q)
                    continue
                if stage == "forward" and q not in b:
                    self.uncompared.add(q)
                    continue
                floor = self.floors.get(q[:-len(".momentum_buffer")] if q.endswith(".momentum_buffer")
                                        else q, self.atol)
                floor = floor + slack.get(stage, {}).get(q, 0.0)
                res = compare_entries(a.get(q), b.get(q), self.rtol, floor, exact=stage == "mask")
                rows.append(Divergence(epoch=epoch, index=index, stage=stage, quantity=q,
                                       layer=layer_of(q), **res))
        return rows

    def _start_stage(self, before, theirs):
        """("what the previous step left", "what this step started from"): parameters,
        buffers and momentum buffers; empty on the first step."""
        if self.prev_left is None:
            return {}, {}
        left, start = dict(self.prev_left), dict(before)
        mom = theirs["momentum_before"]
        if mom or any(k.endswith(".momentum_buffer") for k in left):
            start.update({f"{k}.momentum_buffer": v for k, v in mom.items()})
        else:
            left = {k: v for k, v in left.items() if not k.endswith(".momentum_buffer")}
        return left, start

    def run(self) -> VerifyReport:
        self.unexposed, self.uncompared = set(), set()
        self.prev_left, self.u_slack = None, {}
        coverage = Coverage(self.method, clipping=self.settings["clip_norm"] is not None)
        last_epoch = None
        with StepCapture(self.torch_model, self._mask_paths) as cap:
            for k, (epoch, index) in enumerate(self.schedule):
                x, y = self.batches[k % len(self.batches)]
                x = x * self.input_scale
                if last_epoch is not None:
                    for _ in range(epoch - last_epoch):
                        if self.end_epoch is not None:
                            self.end_epoch()
                        self.trainer.end_epoch()
                last_epoch = epoch
                before = self._torch_state()
                try:
                    cap.run(self.step, self.torch_model, torch.from_numpy(x), torch.from_numpy(y),
                            epoch, index)
                except Exception as e:
                    raise StepError(f"verify: your step raised {type(e).__name__} at epoch {epoch}, "
                                    f"index {index}: {e}{_where(e)}") from e
                theirs = self._theirs(cap)
                self._ensure_twin(theirs["mask_dtypes"])
                self._load_twin(before, theirs["momentum_before"])
                ours, stats = self._ours(x, y, epoch, index)
                ours["start"], theirs["start"] = self._start_stage(before, theirs)
                rows = self._compare(epoch, index, ours, theirs, self._slack(before, ours, stats))
                self.rows += rows
                coverage.record(epoch, before, ours, stats.grad_norm, self.settings["clip_norm"])
                if self.first is None:
                    bad = [r for r in rows if not r.ok]
                    if bad:
                        self.first = bad[0]
                        self._explain(self.first, bad, before, ours, theirs, stats)
                self.prev_V = stats.V
                self.prev_masks = ours.get("mask", {})
                self.prev_left = dict(theirs["update"])
        self.coverage = coverage.seen
        return self._report()

    def _slack(self, before, ours, stats) -> Dict[str, Dict[str, np.ndarray]]:
        """Float32 masks' legitimate rounding in dt and du (:mod:`.rounding`): stage -> quantity -> slack."""
        layers = masked_layer_names(list(before))
        rounded = [n for n, layer in np_masked_layers(self.np_model)
                   if layer.float32_masks and n in layers]
        if not rounded:
            return {}
        grads = ours["grad"]
        eps = rounding.float32_slack(before, grads, rounded, self.method)
        eps.update({q: v for q, v in self.u_slack.items() if q in grads})
        self.u_slack = (rounding.float32_slack_u(before, grads, layers, rounded,
                                                 self.settings["beta"]) if self.learns_u else {})
        clip = rounding.clip_factor(stats.grad_norm, self.settings["clip_norm"])
        return rounding.spread(eps, self.trainer.lr, clip)

    # -- the report ------------------------------------------------------------
    def _report(self) -> VerifyReport:
        never = [k for k, v in self.coverage.items() if not v]
        if never:
            hint = ("use more steps or other batches" if self.input_scale != 1.0 else
                    f"{self.say['stress']} moves the run into every branch")
            self.warnings.append(f"never exercised: {', '.join(never)}; a bug there would go "
                                 f"unseen ({hint})")
        if self.unexposed:
            self.warnings.append(
                f"masks not compared (your model exposes no mask/dmask attribute for them; "
                f"{self.say['name_map']} can point to yours): {short_list(self._order(sorted(self.unexposed)))}")
        if self.uncompared:
            self.warnings.append("loss not compared: the step called backward on no scalar and "
                                 "returned no loss")
        stress = f", stress ({len(self.stressed)} layers moved, inputs x{self.input_scale:g})" \
            if self.input_scale != 1.0 else ""
        summary = (f"dfbst_np twin {self.arch} (method {self.method}, float64, "
                   f"{self._mask_dtype_text()}), "
                   f"{len(self.schedule)} steps{stress}; rtol {self.rtol:g}, atol {self.atol:g}")
        ok = all(r.ok for r in self.rows)
        return VerifyReport(ok=ok, first=self.first, coverage=self.coverage, rows=self.rows,
                            warnings=self.warnings, summary=summary)

    def _mask_dtype_text(self) -> str:
        """What the twin's masks were, and why: passed, detected, or assumed."""
        if not self.masked or self.np_model is None:
            return "masks not built" if self.masked else "no masks"
        f32 = {name: bool(layer.float32_masks) for name, layer in np_masked_layers(self.np_model)}
        on = [n for n, v in f32.items() if v]
        if len(on) == len(f32):
            what = "float32 masks"
        elif not on:
            what = "float64 masks"
        else:
            what = f"float32 masks in {short_list(on, 4)} only"
        source = {"passed": "as passed"}.get(self.f32_source, self.f32_source)
        return f"{what}, {source}" if source else what

    def _explain(self, first: Divergence, bad, before, ours, theirs, stats) -> None:
        from .readings import explain
        explain(first, bad, before, ours, theirs, stats,
                settings=self.settings, method=self.method, prev_V=self.prev_V,
                lr=self.trainer.lr, mask_dtype=self._mask_dtype_text(),
                twin_f32=all(l.float32_masks for _, l in np_masked_layers(self.np_model)),
                f32_hints=(self.say["f32_on"], self.say["f32_off"]), prev_masks=self.prev_masks)
