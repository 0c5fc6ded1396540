"""What every checker shares: run the learner's function on named cases,
compare with the textbook, and name the mistake when one explains the answer.

A checker is a list of :class:`Case` (inputs with a name that says what the
case is about), a reference (a :mod:`dfbst_np.textbook` function) and a list
of :class:`Mistake` (the same function with one typical error in it, and the
hint that names the error). When the learner's output differs from the
reference on a case, the first mistake that reproduces it exactly gives the
hint; if none does, the hint says which output differs and where.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

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
    """What a check cell shows. ``passed`` is True only when every case matches."""
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


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
    return all(_equal(x, y) for x, y in zip(_flatten(a), _flatten(b)))


def _flatten(value) -> List:
    """Nested tuples, lists and dicts of arrays and numbers, as one flat list."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _flatten(value[k])]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return False
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=False))


def first_difference(got: Dict[str, object], want: Dict[str, object]) -> Optional[str]:
    """The name of the first output of ``got`` that differs from ``want``, with why; None if all agree."""
    for name, w in want.items():
        g = got.get(name, "<missing>")
        if isinstance(g, str) and g == "<missing>":
            return f"{name} is missing from what your function returned"
        if w is None or g is None:
            if (w is None) != (g is None):
                return f"{name} should be {'None' if w is None else 'an array'}, yours is {'None' if g is None else 'an array'}"
            continue
        gs, ws = _flatten(g), _flatten(w)
        if len(gs) != len(ws):
            return f"{name} has {len(gs)} parts, expected {len(ws)}"
        for k, (x, y) in enumerate(zip(gs, ws)):
            x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            part = name if len(ws) == 1 else f"{name}[{k}]"
            if x.shape != y.shape:
                return f"{part} has shape {x.shape}, expected {y.shape}"
            if np.isnan(x).any() and not np.isnan(y).any():
                return f"{part} contains NaN"
            if not np.allclose(x, y, rtol=RTOL, atol=ATOL):
                return f"{part} differs from the textbook's (largest difference {np.abs(x - y).max():.3g})"
    return None


def run_checks(fn: Callable, reference: Callable, cases: Sequence[Case], mistakes: Sequence[Mistake],
               outputs: Callable[[object], Dict[str, object]], what: str,
               float_hint: Optional[str] = None) -> Result:
    """Call ``fn`` on every case and compare with ``reference``; print and return the :class:`Result`.

    ``outputs`` turns a return value into named parts (e.g. ``{"M": ..., "t_new": ...}``);
    it may raise TypeError or ValueError for a return value of the wrong form.
    ``float_hint``: if given, ``fn`` runs with NumPy's division and invalid-value
    warnings turned into errors, and this hint explains one (a 0/0 can hide
    behind a mask that is 0 there anyway).
    """
    result = _run(fn, reference, cases, mistakes, outputs, what, float_hint)
    print(repr(result))
    return result


def _run(fn, reference, cases, mistakes, outputs, what, float_hint) -> Result:
    for case in cases:
        args = _copy(case.args)
        try:
            if float_hint is None:
                got_raw = fn(*args)
            else:
                with np.errstate(divide="raise", invalid="raise"):
                    got_raw = fn(*args)
        except NotImplementedError:
            return Result(False, f"not implemented yet: fill in {what}, then run this cell again.")
        except FloatingPointError as e:
            if float_hint is None:
                raise
            return Result(False, f"case '{case.name}': {float_hint} (NumPy: {e})")
        except Exception as e:      # the learner's bug: show it as a hint, not a traceback
            return Result(False, f"case '{case.name}': your function raised {type(e).__name__}: {e}")
        if not _same_args(args, case.args):
            return Result(False, f"case '{case.name}': your function modified its inputs; work on copies.")
        want = outputs(reference(*_copy(case.args)))
        try:
            got = outputs(got_raw)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            return Result(False, f"case '{case.name}': could not read what your function returned ({e}); "
                                 f"expected {', '.join(want)}.")
        diff = first_difference(got, want)
        if diff is None:
            continue
        for mistake in mistakes:
            try:
                wrong = outputs(mistake.fn(*_copy(case.args)))
            except Exception:       # a mistake may not apply to this case
                continue
            if first_difference(got, wrong) is None and first_difference(wrong, want) is not None:
                return Result(False, f"case '{case.name}': {mistake.hint}")
        return Result(False, f"case '{case.name}': {diff}.")
    names = ", ".join(f"'{c.name}'" for c in cases)
    return Result(True, f"{what} agrees with dfbst_np.textbook on all {len(cases)} cases ({names}).")
