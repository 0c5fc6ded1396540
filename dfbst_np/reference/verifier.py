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
0; ``floors`` overrides it per quantity); masks must be identical. The twin
reproduces the torch model's mask dtype (float32 masks, as the authors'
``.float()`` makes them, switch ``float32_masks`` on), detected from the
first step's masks.
"""
from __future__ import annotations

import traceback
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .. import models as np_models
from ..errors import DfbstError
from .. import textbook as tb
from ..sparse.masked import masked_layers as np_masked_layers
from ..train.config import default_config
from ..train.trainer import Trainer
from .capture import StepCapture
from .twin import TraceError, TwinError, twin_from_torch
from .verdict import ATOL, RTOL, STAGES, Divergence, VerifyReport, compare_entries, layer_of

__all__ = ["verify", "VerifyError", "StepError", "DEFAULT_SCHEDULE", "STRESS_INPUT_SCALE",
           "RTOL", "ATOL", "default_settings", "apply_stress"]

#: (epoch, batch index) of each verified step: epoch 1 and 2, index 0 and not
#: (the beta term off, then on), and epoch 3 index 0 (off right after on:
#: u must not move, with no gradient, not even by momentum or weight decay).
DEFAULT_SCHEDULE = ((1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0))
#: stress=True multiplies the inputs by this, so that the gradient norm exceeds the clip norm.
STRESS_INPUT_SCALE = 8.0
_SETTINGS = ("lr", "momentum", "weight_decay", "alpha", "beta", "clip_norm", "milestones", "gamma")
# the parameter that names each built-in architecture, and its number of classes
_ARCH_KEYS = {"lenet300_100": "fc3.weight", "lenet_5": "fc4.weight",
              "vgg16": "classifier.3.weight", "resnet18": "fc.weight"}
_MASKS = (".mask", ".dmask")

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


class VerifyError(DfbstError, ValueError):
    """verify could not run: its inputs are wrong (names the argument and what was expected)."""


class StepError(VerifyError):
    """The user's step function raised; the message says where, in their file."""


def default_settings(method: str = "dfbst") -> Dict[str, object]:
    """The reference settings of ``method`` (SPEC section 1; DST's own for ``dst``)."""
    cfg = default_config(method=method)
    return {key: getattr(cfg, key) for key in _SETTINGS}


# -- names ------------------------------------------------------------------
class NameMap:
    """Torch names -> dfbst_np names: exact entries first, then the longest module prefix.

    ``{"net.0": "fc1"}`` maps ``net.0.weight`` to ``fc1.weight`` and
    ``net.0.mask`` to ``fc1.mask``; ``{"net.0.t": "fc1.threshold"}`` maps one
    name; ``{"net.0.M": "fc1.mask"}`` reads M from the attribute ``net.0.M``.
    """

    def __init__(self, mapping: Optional[Mapping[str, str]]) -> None:
        mapping = dict(mapping or {})
        for k, v in mapping.items():
            if not (isinstance(k, str) and isinstance(v, str)):
                raise VerifyError(f"verify: name_map must map str to str, got {k!r}: {v!r}")
        self.mapping = mapping
        self._prefixes = sorted(mapping, key=len, reverse=True)

    def __call__(self, name: str) -> str:
        if name in self.mapping:
            return self.mapping[name]
        for k in self._prefixes:
            if name.startswith(k + "."):
                v = self.mapping[k]
                return v + name[len(k):] if v else name[len(k) + 1:]
        return name

    def mask_paths(self, model: nn.Module) -> Dict[str, str]:
        """{torch attribute path: dfbst_np name} of every M and D the model exposes."""
        paths = {}
        for mod_name, module in model.named_modules():
            for attr in ("mask", "dmask"):
                if hasattr(module, attr):
                    path = f"{mod_name}.{attr}" if mod_name else attr
                    paths[path] = self(path)
        for k, v in self.mapping.items():
            if v.endswith(_MASKS):
                paths[k] = v
        return {p: n for p, n in paths.items() if n.endswith(_MASKS)}


def _mapped(names: NameMap, items, what: str) -> Dict[str, object]:
    out, source = {}, {}
    for name, value in items:
        new = names(name)
        if new.endswith(_MASKS):
            continue            # a mask kept as a buffer: compared in the mask stage
        if new in out:
            raise VerifyError(f"verify: name_map sends both {source[new]!r} and {name!r} to {new!r}")
        out[new], source[new] = value, name
    return out


def _short(names: List[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _state_difference(ours: Mapping[str, tuple], theirs: Mapping[str, tuple]) -> str:
    """'' when names and shapes agree, else what is missing, extra or of another shape."""
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    shapes = [f"{k} {theirs[k]} (expected {ours[k]})" for k in ours
              if k in theirs and tuple(theirs[k]) != tuple(ours[k])]
    parts = []
    if missing:
        parts.append(f"missing in your model: {_short(missing)}")
    if extra:
        parts.append(f"extra in your model: {_short(extra)}")
    if shapes:
        parts.append(f"other shapes: {_short(shapes)}")
    return "; ".join(parts)


def _shapes(state: Mapping) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


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
        diff = _state_difference(_shapes(model.state_dict()), shapes)
        if not diff:
            return arch, model
        prefix = found[0][:-len(key) - 1]
        hint = say["prefix"].format(prefix) if prefix else say["name_map"]
        closest = closest or (arch, f"{diff}; pass {hint} or use {say['np_model']}")
    if closest is None:
        raise VerifyError(
            f"verify: the torch model matches no built-in architecture ({', '.join(_ARCH_KEYS)}, "
            f"method {method!r}): none of {sorted(_ARCH_KEYS.values())} is among its parameters "
            f"({_short(list(shapes))}); pass {say['name_map']} or use {say['np_model']}")
    arch, diff = closest
    raise VerifyError(f"verify: the torch model does not match dfbst_np's {arch} with method "
                      f"{method!r}: {diff}")


# -- stress -----------------------------------------------------------------
def masked_layer_names(names: Sequence[str]) -> List[str]:
    """dfbst_np names of the masked layers (those with a ``threshold``), in order."""
    return [n[:-len(".threshold")] for n in names if n.endswith(".threshold")]


#: stress=True's layer between the reset density and 5 %: the fraction of W it keeps.
STRESS_LOW_DENSITY = 0.03
#: Estimator inputs x stress places in h's plateau (0.4 < |x| <= 1) and tail (|x| > 1).
STRESS_PLATEAU, STRESS_TAIL = 0.7, 1.5


def _rows_of(n_rows: int, *wanted: int) -> List[int]:
    """Distinct rows for the stress's special rows (fewer when the layer is small)."""
    return sorted({r for r in wanted if r < n_rows})


def apply_stress(params: Mapping[str, torch.Tensor], method: str) -> Dict[str, str]:
    r"""Move the model into every branch of SPEC (module docstring); returns what was done.

    ``params`` are the torch parameters by dfbst_np name; they are changed in
    place. Per masked layer, with x the estimator's input:

    * t: x = |W| - |t| in all three regions of h: a few entries of row 0
      are set to |W| = |t_0| + 0.7 (h's plateau) and of row 2 to
      |t_2| + 1.5 (its tail), positive so the mask keeps them and ReLU
      passes them; every other entry sits near t (|x| <= 0.4); t of both
      signs (alternating by row);
    * u: x = |Ghat| - u: u_i = 0.5 / fan_in (D drops a row's smaller half,
      |x| <= 0.4), except row 1 at 0.7, row 3 at 1.5 and row 4 at
      -0.5 / fan_in (u < 0: D keeps the whole row);
    * the largest masked layer keeps 3 % of its weights (between the reset
      density 1 % and 5 %), another has every |t_i| above the row's |W|
      (the reset fires), the rest keep 70 % (t at the row's 30th percentile).
    """
    layers = masked_layer_names(list(params))
    if not layers:
        return {}
    size = {n: params[f"{n}.weight"].numel() for n in layers}
    low = max(layers, key=lambda n: size[n]) if len(layers) > 1 else None
    reset = next((n for n in layers[1:] + layers[:1] if n != low), layers[0])
    done = {}
    with torch.no_grad():
        for layer in layers:
            W = params[f"{layer}.weight"]
            rows = W.detach().abs().reshape(W.shape[0], -1)
            n_out, fan_in = rows.shape
            sign = torch.ones(n_out, dtype=W.dtype)
            sign[1::2] = -1
            t = params[f"{layer}.threshold"]
            if layer == low:
                if method == "dst":
                    # dst masks with t itself: a negative t keeps its whole row
                    sign = torch.ones(n_out, dtype=W.dtype)
                    sign[-1] = -1
                level = torch.full((n_out,), float(torch.quantile(rows.flatten()[:2 ** 24],
                                                                  1 - STRESS_LOW_DENSITY)),
                                   dtype=W.dtype)
                done[layer] = f"{STRESS_LOW_DENSITY:.0%} density"
            elif layer == reset:
                level = torch.zeros(n_out, dtype=W.dtype)
                done[layer] = "reset"
            else:
                level = rows.kthvalue(max(1, int(0.3 * fan_in)), dim=1).values
                done[layer] = "t of both signs"
            # a few entries in h's plateau and tail (x = |W| - |t| > 0: kept by M)
            flat = W.view(n_out, -1)
            n_big = max(2, fan_in // 25)
            cols = torch.linspace(0, fan_in - 1, n_big).round().long().unique()
            for row, x in zip(_rows_of(n_out, 0, 2), (STRESS_PLATEAU, STRESS_TAIL)):
                flat[row, cols] = level[row] + x
            if layer == reset:
                rows = W.detach().abs().reshape(n_out, -1)
                level = rows.max(dim=1).values + 0.05
                # dfbst masks with |t|: a negative t above every |W| keeps nothing
                t.copy_(-level if method == "dfbst" else level)
            else:
                t.copy_(level * sign)
            u = params.get(f"{layer}.dthreshold")
            if u is not None:
                u.fill_(0.5 / fan_in)
                for row, x in zip(_rows_of(n_out, 1, 3, 4), (STRESS_PLATEAU, STRESS_TAIL,
                                                              -0.5 / fan_in)):
                    u[row] = x
    return done


#: The regions of the estimator h's input, as coverage names them.
REGIONS = ("|x| <= 0.4", "0.4 < |x| <= 1", "|x| > 1")


def estimator_regions(x: np.ndarray) -> Tuple[bool, bool, bool]:
    """Whether x has entries in each region of h: |x| <= 0.4, 0.4 < |x| <= 1, |x| > 1."""
    a = np.abs(x)
    return bool(np.any(a <= 0.4)), bool(np.any((a > 0.4) & (a <= 1))), bool(np.any(a > 1))


# -- inputs -----------------------------------------------------------------
def _check_schedule(schedule) -> List[Tuple[int, int]]:
    out = []
    try:
        for epoch, index in schedule:
            out.append((int(epoch), int(index)))
    except (TypeError, ValueError):
        raise VerifyError(f"verify: schedule must be a list of (epoch, index) pairs, got {schedule!r}") from None
    if not out:
        raise VerifyError("verify: schedule is empty")
    for k, (e, i) in enumerate(out):
        if e < 1 or i < 0 or (k and e < out[k - 1][0]):
            raise VerifyError(f"verify: schedule entry {k} is {(e, i)}; epochs count from 1, "
                              "indices from 0, and epochs never decrease")
    return out


def _check_batches(batches) -> List[Tuple[np.ndarray, np.ndarray]]:
    out = []
    try:
        pairs = list(batches)
    except TypeError:
        raise VerifyError(f"verify: batches must be a list of (x, y), got {type(batches).__name__}") from None
    for k, pair in enumerate(pairs):
        try:
            x, y = pair
        except (TypeError, ValueError):
            raise VerifyError(f"verify: batch {k} is not an (x, y) pair") from None
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if x.dtype.kind != "f" or y.dtype.kind not in "iu":
            raise VerifyError(f"verify: batch {k} must hold float images and integer labels, "
                              f"got {x.dtype} and {y.dtype}")
        if y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise VerifyError(f"verify: batch {k}: x has shape {x.shape}, y {y.shape}; "
                              "expected (N, ...) and (N,)")
        # verify runs in float64 (SPEC section 7): the cast is the point, not an accident
        out.append((x.astype(np.float64), y.astype(np.int64)))
    if not out:
        raise VerifyError("verify: batches is empty")
    return out


def _check_settings(method: str, settings) -> Dict[str, object]:
    merged = default_settings(method)
    unknown = sorted(set(settings or {}) - set(_SETTINGS))
    if unknown:
        raise VerifyError(f"verify: unknown settings {unknown}; expected some of {list(_SETTINGS)}")
    merged.update(settings or {})
    for key in ("lr", "momentum", "weight_decay", "alpha", "beta", "gamma"):
        merged[key] = check_number(merged[key], f"settings[{key!r}]")
    if merged["clip_norm"] is not None:
        merged["clip_norm"] = check_number(merged["clip_norm"], "settings['clip_norm']", positive=True)
    try:
        merged["milestones"] = tuple(int(m) for m in merged["milestones"])
    except (TypeError, ValueError):
        raise VerifyError(f"verify: settings['milestones'] must be epoch numbers, got "
                          f"{merged['milestones']!r}") from None
    return merged


def check_number(value, what: str, positive: bool = False) -> float:
    """``value`` as a float when it is finite and >= 0 (> 0 if ``positive``); VerifyError naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not np.isfinite(number) or number < 0 \
            or (positive and number == 0):
        raise VerifyError(f"verify: {what} must be a finite number {'> 0' if positive else '>= 0'}, "
                          f"got {value!r}")
    return number


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
    if method not in ("dense", "dst", "dfbst"):
        raise VerifyError(f"verify: method must be 'dense', 'dst' or 'dfbst', got {method!r}")
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
    run = _Run(torch_model, step, _check_batches(batches), method, _check_settings(method, settings),
               _check_schedule(schedule), np_model, NameMap(name_map), end_epoch, rtol, atol,
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
        self.names, self.end_epoch = names, end_epoch
        self.rtol, self.atol, self.floors = rtol, atol, floors
        self.float32_masks = float32_masks
        self.params = _mapped(names, torch_model.named_parameters(), "parameter")
        self.state_names = list(_mapped(names, torch_model.state_dict().items(), "state"))
        self.mask_paths = names.mask_paths(torch_model)
        self.arch, self.np_model, self.trainer = None, np_model, None
        self.f32_source = "passed" if float32_masks is not None else None
        if np_model is not None:
            diff = _state_difference(_shapes(np_model.state_dict()), self._torch_shapes())
            if diff:
                raise VerifyError(f"verify: the torch model does not match np_model: {diff}")
            dtypes = {str(v.dtype) for v in np_model.params.values()}
            if dtypes != {"float64"}:
                raise VerifyError(f"verify: np_model's parameters are {', '.join(sorted(dtypes))}; "
                                  "verification runs in float64: build your twin with dtype=np.float64")
            self.arch = f"{type(np_model).__name__} (yours)"
            if float32_masks is not None:
                for _, layer in np_masked_layers(np_model):
                    layer.float32_masks = bool(float32_masks)
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
        return {k: tuple(v.shape) for k, v in
                _mapped(self.names, self.torch_model.state_dict().items(), "state").items()}

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
            diff = _state_difference(_shapes(twin.state_dict()), self._torch_shapes())
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
        if self.method != "dense":
            self.stressed = apply_stress(self.params, self.method)
        self.input_scale = STRESS_INPUT_SCALE

    # -- torch side --------------------------------------------------------
    def _torch_state(self) -> Dict[str, np.ndarray]:
        sd = _mapped(self.names, self.torch_model.state_dict().items(), "state")
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
            layers = np_masked_layers(self.np_model)
            if self.float32_masks is not None:
                pass                                # passed: set when the twin was built
            elif self.f32_layers is not None:
                self.f32_source = "as your forward makes them"
            elif mask_dtypes:
                self.f32_source = "as your exposed masks are"
                f32 = any(dt == torch.float32 for dt in mask_dtypes.values())
                for _, layer in layers:
                    layer.float32_masks = f32
            elif self.method != "dense":
                self.f32_source = "assumed"
                self.warnings.append(
                    "the dtype of your masks is unknown (no masks exposed, forward not traced): "
                    f"float64 masks assumed; if they are float32, pass {self.say['f32_on']}")
            if self.float32_masks is not None:
                for _, layer in layers:
                    layer.float32_masks = bool(self.float32_masks)
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

    def _compare(self, epoch, index, ours, theirs) -> List[Divergence]:
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
        self.prev_left, self.prev_u_regions, self.prev_beta = None, None, False
        seen = {key: False for key in self._branches()}
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
                rows = self._compare(epoch, index, ours, theirs)
                self.rows += rows
                for key, fired in self._fired(epoch, before, ours, stats).items():
                    seen[key] = seen[key] or fired
                if self.first is None:
                    bad = [r for r in rows if not r.ok]
                    if bad:
                        self.first = bad[0]
                        self._explain(self.first, bad, before, ours, theirs, stats)
                self.prev_V = stats.V
                self.prev_masks = ours.get("mask", {})
                self.prev_left = dict(theirs["update"])
        self.coverage = seen
        return self._report()

    # -- coverage ------------------------------------------------------------
    def _branches(self) -> List[str]:
        keys = ["epoch 1", "epoch 2", "state carried between steps"]
        if self.method != "dense":
            keys += ["t < 0", "reset", "density 1-5 %"] + [f"h(t) {r}" for r in REGIONS]
        if self.method == "dfbst":
            keys += ["D dropped entries", "u < 0"] + [f"h(u) {r}" for r in REGIONS]
            keys += ["beta term on", "beta term off", "beta off after on"]
        if self.settings["clip_norm"] is not None:
            keys.append("clipping active")
        return keys

    def _fired(self, epoch, before, ours, stats) -> Dict[str, bool]:
        fired = {"epoch 1": epoch == 1, "epoch 2": epoch >= 2,
                 "state carried between steps": bool(ours.get("start"))}
        layers = masked_layer_names(list(before))
        grads = ours["grad"]
        if self.method != "dense":
            fired["t < 0"] = any(np.any(before[f"{n}.threshold"] < 0) for n in layers)
            reset = low = False
            regions = [False] * 3
            for n in layers:
                W = before[f"{n}.weight"].reshape(before[f"{n}.weight"].shape[0], -1)
                t = before[f"{n}.threshold"]
                M = tb.H(np.abs(W) - tb.effective_threshold(t, self.method)[:, None])
                density = M.mean()
                reset = reset or density <= tb.RESET_DENSITY
                low = low or tb.RESET_DENSITY < density <= 0.05
                if density <= tb.RESET_DENSITY:
                    t = np.zeros_like(t)
                # h(|W| - |t|) where it reaches the gradient: entries with dW != 0
                x = (np.abs(W) - tb.effective_threshold(t, self.method)[:, None])
                dW = grads.get(f"{n}.weight")
                if dW is not None:
                    x = x[dW.reshape(W.shape) != 0]
                regions = [a or b for a, b in zip(regions, estimator_regions(x))]
            fired["reset"], fired["density 1-5 %"] = bool(reset), bool(low)
            fired.update({f"h(t) {r}": v for r, v in zip(REGIONS, regions)})
        if self.method == "dfbst":
            masks = ours["mask"]
            fired["D dropped entries"] = any(
                np.any((masks[f"{n}.dmask"] == 0) & (grads[f"{n}.weight"] != 0))
                for n in layers if f"{n}.dmask" in masks)
            fired["u < 0"] = any(np.any(before[f"{n}.dthreshold"] < 0) for n in layers
                                 if f"{n}.dthreshold" in before)
            on = any(f"{n}.dthreshold" in grads for n in layers)
            fired["beta term on"], fired["beta term off"] = on, not on
            fired["beta off after on"] = self.prev_beta and not on
            # h(|Ghat| - u) of this step's values is used by the next beta term
            if on and self.prev_u_regions is not None:
                fired.update({f"h(u) {r}": v for r, v in zip(REGIONS, self.prev_u_regions)})
            regions = [False] * 3
            for n in layers:
                dW = grads.get(f"{n}.weight")
                u = before.get(f"{n}.dthreshold")
                if dW is None or u is None:
                    continue
                rows = dW.reshape(dW.shape[0], -1)
                x = np.abs(tb.row_normalise(rows)) - u[:, None]
                regions = [a or b for a, b in zip(regions, estimator_regions(x[rows != 0]))]
            self.prev_u_regions, self.prev_beta = regions, on
        if self.settings["clip_norm"] is not None:
            fired["clipping active"] = stats.grad_norm > self.settings["clip_norm"]
        return fired

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
                f"{self.say['name_map']} can point to yours): {_short(self._order(sorted(self.unexposed)))}")
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
        if self.method == "dense" or self.np_model is None:
            return "no masks" if self.method == "dense" else "masks not built"
        f32 = {name: bool(layer.float32_masks) for name, layer in np_masked_layers(self.np_model)}
        on = [n for n, v in f32.items() if v]
        if len(on) == len(f32):
            what = "float32 masks"
        elif not on:
            what = "float64 masks"
        else:
            what = f"float32 masks in {_short(on, 4)} only"
        source = {"passed": "as passed"}.get(self.f32_source, self.f32_source)
        return f"{what}, {source}" if source else what

    def _explain(self, first: Divergence, bad, before, ours, theirs, stats) -> None:
        from .readings import explain
        explain(first, bad, before, ours, theirs, stats,
                settings=self.settings, method=self.method, prev_V=self.prev_V,
                lr=self.trainer.lr, mask_dtype=self._mask_dtype_text(),
                twin_f32=all(l.float32_masks for _, l in np_masked_layers(self.np_model)),
                f32_hints=(self.say["f32_on"], self.say["f32_off"]), prev_masks=self.prev_masks)
