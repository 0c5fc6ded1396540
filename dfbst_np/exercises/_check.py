"""What every checker shares: run the learner's function on named cases,
compare with the textbook, and name the mistake when one explains the answer.

A checker is a list of :class:`Case` (inputs with a name that says what the
case is about), a reference (a :mod:`dfbst_np.textbook` function) and a list
of :class:`Mistake` (the same function with one typical error in it, and the
hint that names the error). The learner's function runs on every case while
the function under test is hidden (:func:`hidden`), so calling the answer is
caught. Then, on the first case that fails:

* an exception, a modified input or an output that is not real numbers is
  reported in one line;
* else the first mistake that reproduces the learner's output on *every*
  case gives its hint (so two mistakes that agree on one case are told apart
  by another); failing that, the first that reproduces it on this case;
* else an exercise's own ``diagnose`` may explain it (exercise 4: which
  update points elsewhere, which is only rescaled by clipping);
* else every differing output is listed, in the order the step computes them.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

RTOL, ATOL = 1e-9, 1e-12


@dataclass
class Case:
    """Inputs of one check. ``args`` are copied before every call."""
    name: str
    args: tuple


@dataclass
class Mistake:
    """A typical wrong answer: ``fn`` has the reference's signature."""
    fn: Callable
    hint: str


@dataclass
class Result:
    """What a check cell shows. ``passed`` is True only when every case matches.

    ``cases`` maps each case's name to whether the learner's output matched on
    it (what an autograder gives points for; all False when the learner's
    function called the answer it was asked to write).
    """
    passed: bool
    message: str
    cases: Dict[str, bool] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


class _CalledTheAnswer(Exception):
    """Raised by a hidden function when the learner's code calls it."""


def _copy(args):
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            out.append(a.copy())
        elif isinstance(a, (list, tuple)) and a and isinstance(a[0], np.ndarray):
            out.append(type(a)(x.copy() for x in a))
        elif isinstance(a, dict):
            out.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.items()})
        else:
            out.append(a)
    return tuple(out)


def _same_args(a, b) -> bool:
    fa, fb = _flatten(a), _flatten(b)
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and x.shape == y.shape and x.dtype == y.dtype
                    and np.array_equal(x, y)):
                return False
        elif isinstance(x, np.ndarray) or not (x is y or x == y):
            return False
    return True


def _flatten(value) -> List:
    """Nested tuples, lists and dicts of arrays and numbers, as one flat list."""
    if isinstance(value, dict):
        return [x for k in sorted(value, key=str) for x in _flatten(value[k])]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _parts(name, value) -> List[Tuple[str, object]]:
    """(label, leaf) of one named output; a list output (one entry per layer) is labelled name[k]."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return [(f"{name}[{k}]", v) for k, v in enumerate(value)]
    return [(name, value)]


def number_problem(label: str, x) -> Optional[str]:
    """Why ``x`` is not a real number or an array of real numbers; None if it is."""
    if isinstance(x, (set, frozenset, dict)):
        return f"{label} is a {type(x).__name__}, not an array of numbers"
    if isinstance(x, (str, bytes)):
        return f"{label} is a string ({x!r:.40}), not an array of numbers"
    try:
        a = np.asarray(x)
    except Exception as e:      # ragged nested lists and the like
        return f"{label} is not an array of numbers ({type(e).__name__}: {e})"
    if a.dtype.kind == "c":
        return (f"{label} is complex (dtype {a.dtype}): every DFBST quantity is real; "
                f"find where an imaginary part (a 1j, or a sqrt/log of a complex) entered")
    if a.dtype.kind == "O":
        return f"{label} is an array of Python objects (dtype object), not of numbers"
    if a.dtype.kind not in "biuf":
        return f"{label} has dtype {a.dtype}, not a number type"
    return None


def differences(got: Dict[str, object], want: Dict[str, object]) -> List[str]:
    """Every output of ``got`` that differs from ``want``, in ``want``'s order, each with why."""
    out = []
    for name, w in want.items():
        if name not in got:
            out.append(f"{name} is missing from what your function returned")
            continue
        g = got[name]
        if w is None or g is None:
            if (w is None) != (g is None):
                out.append(f"{name} should be {'None' if w is None else 'an array'}, "
                           f"yours is {'None' if g is None else 'an array'}")
            continue
        gp, wp = _parts(name, g), _parts(name, w)
        if len(gp) != len(wp):
            out.append(f"{name} has {len(gp)} parts, expected {len(wp)} (one per layer)")
            continue
        for (label, x), (_, y) in zip(gp, wp):
            x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            if x.shape != y.shape:
                out.append(f"{label} has shape {x.shape}, expected {y.shape}")
            elif np.isnan(x).any() and not np.isnan(y).any():
                out.append(f"{label} contains NaN")
            elif not np.allclose(x, y, rtol=RTOL, atol=ATOL):
                out.append(f"{label} differs (largest difference {np.abs(x - y).max():.3g})")
    return out


def first_difference(got, want) -> Optional[str]:
    """The first of :func:`differences`, or None if every output agrees."""
    d = differences(got, want)
    return d[0] if d else None


def _read(outputs, raw, want) -> Tuple[Optional[dict], Optional[str]]:
    """The learner's return value as named outputs, or why it cannot be read."""
    if isinstance(raw, (set, frozenset)):
        return None, f"your function returned a {type(raw).__name__}; return {', '.join(want)} as a tuple"
    try:
        got = outputs(raw)
    except Exception as e:
        return None, (f"could not read what your function returned ({type(e).__name__}: {e}); "
                      f"expected {', '.join(want)}")
    for name, value in got.items():
        if value is None:
            continue
        for label, leaf in _parts(name, value):
            if isinstance(leaf, (list, tuple)):
                leaves = _flatten(leaf)
                if any(isinstance(v, (np.ndarray, list, tuple, set, dict)) for v in leaves):
                    return None, f"{label} is a nested list; return an array"
            problem = number_problem(label, leaf)
            if problem:
                return None, problem
    return got, None


def _sentinel(qualname: str, calls: List[str]):
    def answer_is_hidden(*args, **kwargs):
        calls.append(qualname)
        raise _CalledTheAnswer(qualname)
    answer_is_hidden.__name__ = qualname.rsplit(".", 1)[-1]
    return answer_is_hidden


def _unwrap(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__func__", fn)


@contextlib.contextmanager
def hidden(fn, targets: Sequence[Tuple[object, str]]):
    """Replace each ``(module, name)`` with a sentinel that records a call, while the block runs.

    Also replaced: names in ``fn``'s globals and closure bound to the same
    object (``from dfbst_np.textbook import forward_mask as fm``). Everything
    is restored on exit, whatever happens. Yields the list of calls.
    """
    calls: List[str] = []
    undo = []
    inner = _unwrap(fn)
    g = getattr(inner, "__globals__", None)
    cells = [c for c in (getattr(inner, "__closure__", None) or ())]
    try:
        for module, name in targets:
            real = getattr(module, name)
            stand_in = _sentinel(f"{module.__name__}.{name}", calls)
            undo.append((module.__dict__, name, real))
            setattr(module, name, stand_in)
            if g is not None and g is not module.__dict__:
                for k, v in list(g.items()):
                    if v is real:
                        undo.append((g, k, v))
                        g[k] = stand_in
            for cell in cells:
                try:
                    if cell.cell_contents is real:
                        undo.append((cell, None, real))
                        cell.cell_contents = stand_in
                except ValueError:      # an empty cell
                    pass
        yield calls
    finally:
        for where, key, value in reversed(undo):
            if key is None:
                where.cell_contents = value
            else:
                where[key] = value


def _call(fn, args, float_hint):
    if float_hint is None:
        return fn(*args)
    with np.errstate(divide="raise", invalid="raise"):
        return fn(*args)


def run_checks(fn: Callable, reference: Callable, cases: Sequence[Case], mistakes: Sequence[Mistake],
               outputs: Callable[[object], Dict[str, object]], what: str,
               float_hint: Optional[str] = None, hide: Sequence[Tuple[object, str]] = (),
               diagnose: Optional[Callable] = None, quiet: bool = False) -> Result:
    """Call ``fn`` on every case and compare with ``reference``; print and return the :class:`Result`.

    ``outputs`` turns a return value into named parts in the order the step
    computes them (e.g. ``{"M": ..., "t_new": ...}``). ``float_hint``: if given,
    ``fn`` runs with NumPy's division and invalid-value warnings turned into
    errors, and this hint explains one (a 0/0 can hide behind a mask that is 0
    there anyway). ``hide``: the ``(module, name)`` of the answer, unavailable
    while ``fn`` runs. ``diagnose(case, got, want)``: an exercise's own
    explanation of a difference no listed mistake reproduces, or None.
    ``quiet``: do not print (an autograder's test).
    """
    result = _run(fn, reference, cases, mistakes, outputs, what, float_hint, hide, diagnose)
    if not quiet:
        print(repr(result))
    return result


def _run(fn, reference, cases, mistakes, outputs, what, float_hint, hide, diagnose) -> Result:
    for module, name in hide:
        if _unwrap(fn) is getattr(module, name):
            return Result(False, f"your {what} is {module.__name__}.{name} itself, the answer this "
                                 f"exercise asks you to write: write its body yourself.",
                          {c.name: False for c in cases})
    wants = [outputs(reference(*_copy(c.args))) for c in cases]
    raws, errors = [], []
    with hidden(fn, hide) as calls:
        for case in cases:
            args = _copy(case.args)
            try:
                raws.append(_call(fn, args, float_hint))
                errors.append(None if _same_args(args, case.args) else "modified")
            except NotImplementedError:
                return Result(False, f"not implemented yet: fill in {what}, then run this cell again.",
                              {c.name: False for c in cases})
            except _CalledTheAnswer as e:
                raws.append(None)
                errors.append(e)
            except Exception as e:      # the learner's bug: one line, not a traceback
                raws.append(None)
                errors.append(e)
    if calls:
        return Result(False, f"your {what} calls {calls[0]}, the answer this exercise asks you to write "
                             f"(it is hidden while the check runs): write it from the building blocks.",
                      {c.name: False for c in cases})

    gots, problems = [], []
    for case, raw, err, want in zip(cases, raws, errors, wants):
        if err == "modified":
            gots.append(None)
            problems.append("your function modified its inputs; work on copies.")
        elif (isinstance(err, FloatingPointError) and float_hint is not None
              and any(w in str(err) for w in ("divide", "invalid"))):
            gots.append(None)
            problems.append(f"{float_hint} (NumPy: {err})")
        elif err is not None:
            gots.append(None)
            problems.append(f"your function raised {type(err).__name__}: {_one_line(err)}")
        else:
            got, problem = _read(outputs, raw, want)
            gots.append(got)
            problems.append(problem)
    passed = {c.name: (p is None and g is not None and not differences(g, w))
              for c, g, p, w in zip(cases, gots, problems, wants)}
    if all(passed.values()):
        names = ", ".join(f"'{c.name}'" for c in cases)
        return Result(True, f"{what} agrees with dfbst_np.textbook on all {len(cases)} cases ({names}).", passed)

    k = next(i for i, c in enumerate(cases) if not passed[c.name])
    case = cases[k]
    if problems[k] is not None:
        return Result(False, f"case '{case.name}': {problems[k].rstrip('.')}.", passed)
    hint = _mistake_hint(cases, gots, wants, mistakes, outputs, k)
    if hint is None and diagnose is not None:
        hint = diagnose(case, gots[k], wants[k])
    if hint is None:
        diffs = differences(gots[k], wants[k])
        same = [n for n in wants[k] if not any(d.startswith((n + " ", n + "[")) for d in diffs)]
        hint = "; ".join(diffs) + (f" (these agree: {', '.join(same)})" if same else "")
        hint += ". In the order the step computes them, the first differing output is where to look"
    return Result(False, f"case '{case.name}': {hint.rstrip('.')}.", passed)


def _one_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "(no message)"


def _mistake_hint(cases, gots, wants, mistakes, outputs, k) -> Optional[str]:
    """The hint of the first mistake that reproduces the learner on every case it ran, else on case k."""
    reproduces = []
    for mistake in mistakes:
        per_case = []
        for case, got, want in zip(cases, gots, wants):
            if got is None:
                per_case.append(None)
                continue
            try:
                with np.errstate(all="ignore"):
                    wrong = outputs(mistake.fn(*_copy(case.args)))
            except Exception:       # a mistake may not apply to this case
                per_case.append(False)
                continue
            per_case.append(not differences(got, wrong))
        if not per_case[k]:
            continue
        if all(p is not False for p in per_case):
            return mistake.hint
        reproduces.append(mistake)
    return reproduces[0].hint if reproduces else None
