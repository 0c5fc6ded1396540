r"""Entry-by-entry comparison of two arrays, and the report :func:`~.verifier.verify` returns.

An entry of a compared quantity agrees when

.. math:: |a - b| \le \text{rtol}\, |a| + \text{atol},

with a the dfbst_np value ("ours", the specification's numbers) and b the
user's ("theirs"), as ``torch.testing.assert_close`` judges with ``a`` as the
expected value. ``atol`` is the absolute floor for entries whose true value
is 0 (an architecture's mathematically zero gradients, such as VGG-16's
linear bias before BatchNorm1d, come out as rounding noise on both sides).
Masks (0/1) must be identical. A quantity present on one side only (u with
a gradient on one side: "no gradient" is not "zero gradient") or with
another shape disagrees in every entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

#: Default relative tolerance (SPEC section 7).
RTOL = 1e-6
#: Default absolute floor, for entries whose true value is 0.
ATOL = 1e-12
#: The stages of one step, in order.
STAGES = ("start", "forward", "grad", "mask", "used_grad", "update")


@dataclass
class Divergence:
    """One compared quantity of one step.

    ``mismatched`` of ``total`` entries are outside tolerance; ``worst_index``
    is the entry that exceeds its tolerance most, where ``ours`` (dfbst_np)
    and ``theirs`` (the torch code) are read. ``max_abs`` is the largest
    |ours - theirs| and ``max_rel`` that divided by max |ours|. ``layer`` is
    the module the quantity belongs to (for network-level quantities, the
    first layer that also diverges at this step); ``reading`` a one-line
    interpretation where the pattern is clear.
    """

    epoch: int
    index: int
    stage: str
    quantity: str
    mismatched: int
    total: int
    worst_index: Optional[Tuple[int, ...]]
    ours: Optional[float]
    theirs: Optional[float]
    max_abs: float = 0.0
    max_rel: float = 0.0
    note: str = ""
    layer: Optional[str] = None
    reading: str = ""

    @property
    def ok(self) -> bool:
        return self.mismatched == 0

    def describe(self) -> str:
        """One line: what differs, where, how much, and both values at the worst entry."""
        where = f"at epoch {self.epoch}, index {self.index}, stage {self.stage}"
        verb = "differ" if self.quantity == "logits" else "differs"
        if self.note:
            return f"{self.quantity} {verb} {where}: {self.note}"
        at = "" if self.worst_index is None else f" {tuple(int(i) for i in self.worst_index)}"
        return (f"{self.quantity} {verb} {where}: {self.mismatched} of {self.total} entries; "
                f"worst at{at or ' ()'}: dfbst_np {self.ours!r}, yours {self.theirs!r}")


def layer_of(quantity: str) -> Optional[str]:
    """The module a quantity belongs to: ``fc1.weight.momentum_buffer`` -> ``fc1``; ``loss`` -> None."""
    name = quantity[:-len(".momentum_buffer")] if quantity.endswith(".momentum_buffer") else quantity
    head, dot, _ = name.rpartition(".")
    return head if dot else None


def compare_entries(ours, theirs, rtol: float, atol: float, exact: bool = False):
    """Compare two arrays entry by entry (see the module docstring).

    Returns
    -------
    dict with ``mismatched``, ``total``, ``worst_index``, ``ours``, ``theirs``,
    ``max_abs``, ``max_rel`` and ``note`` (why the comparison was impossible, or "").
    """
    if ours is None or theirs is None:
        side = "dfbst_np" if theirs is None else "your code"
        present = np.asarray(theirs if ours is None else ours)
        return dict(mismatched=max(present.size, 1), total=max(present.size, 1), worst_index=None,
                    ours=None, theirs=None, max_abs=math.inf, max_rel=math.inf,
                    note=f"present only in {side}")
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return dict(mismatched=max(a.size, b.size), total=max(a.size, b.size), worst_index=None,
                    ours=None, theirs=None, max_abs=math.inf, max_rel=math.inf,
                    note=f"shape {a.shape} in dfbst_np, {b.shape} in your code")
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    allowed = 0.0 if exact else rtol * np.abs(np.where(np.isnan(a), 0.0, a)) + atol
    excess = diff - allowed
    bad = excess > 0
    mismatched = int(bad.sum())
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(np.where(np.isnan(a), 0.0, a)).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    worst = None
    if a.size:
        # the entry furthest beyond its tolerance (largest difference when none is)
        flat = int(np.argmax(excess if mismatched else diff))
        worst = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if a.ndim else ()
    return dict(mismatched=mismatched, total=int(a.size), worst_index=worst,
                ours=None if worst is None else float(a[worst]),
                theirs=None if worst is None else float(b[worst]),
                max_abs=max_abs, max_rel=max_rel, note="")


@dataclass
class VerifyReport:
    """What :func:`~dfbst_np.reference.verifier.verify` found.

    Attributes
    ----------
    ok : bool
        True when every compared quantity of every step agrees (the CLI's
        exit 0). With :attr:`blind_spots`, the printed verdict is "OK, with
        blind spots: ...": branches that never fired were not compared.
    first : Divergence or None
        The first divergence in step order, then stage order
        (:data:`STAGES`), then layer order.
    coverage : dict of str to bool
        Whether each branch of the algorithm fired on some step.
    rows : list of Divergence
        Every comparison made (agreeing ones included), in that order.
    warnings : list of str
        Branches that never fired, quantities not compared, and why.
    summary : str
        The run: twin model, method, steps, tolerances.
    """

    ok: bool
    first: Optional[Divergence]
    coverage: Dict[str, bool]
    rows: List[Divergence] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    summary: str = ""

    @property
    def blind_spots(self) -> List[str]:
        """The branches that never fired: an OK says nothing about them."""
        return [k for k, v in self.coverage.items() if not v]

    def failures(self) -> List[Divergence]:
        """Every comparison outside tolerance, in report order."""
        return [r for r in self.rows if not r.ok]

    def table(self) -> str:
        """Every comparison: step, stage, quantity, mismatched entries, max abs and rel errors."""
        width = max([len(r.quantity) for r in self.rows] + [8])
        lines = [f"{'epoch':>5} {'index':>5}  {'stage':<9}  {'quantity':<{width}}  "
                 f"{'mismatched':>16}  {'max abs err':>11}  {'max rel err':>11}"]
        lines.append("-" * len(lines[0]))
        for r in self.rows:
            count = f"{r.mismatched}/{r.total}"
            flag = "" if r.ok else "  <-- " + (r.note or "outside tolerance")
            lines.append(f"{r.epoch:>5} {r.index:>5}  {r.stage:<9}  {r.quantity:<{width}}  "
                         f"{count:>16}  {r.max_abs:>11.3e}  {r.max_rel:>11.3e}{flag}")
        return "\n".join(lines)

    def headline(self) -> str:
        """The report without its table: verdict, first divergence, coverage, warnings."""
        return str(self).split("\n\n", 1)[0]

    def __str__(self) -> str:
        n_bad = len(self.failures())
        blind = self.blind_spots
        if not self.ok:
            verdict = f"DIVERGENCE: {n_bad} of {len(self.rows)} comparisons outside tolerance"
        elif blind:
            verdict = (f"OK, with blind spots: {', '.join(blind)} (never fired: a bug there would "
                       "go unseen); elsewhere your code agrees with dfbst_np")
        else:
            verdict = "OK: your code agrees with dfbst_np"
        out = [f"verify: {verdict}", f"  {self.summary}"]
        if self.first is not None:
            out.append(f"first divergence: {self.first.describe()}")
            if self.first.reading:
                out.append(f"  reading: {self.first.reading}")
        cov = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in self.coverage.items())
        out.append(f"coverage: {cov}")
        out += [f"warning: {w}" for w in self.warnings]
        out += ["", self.table()]
        return "\n".join(out)

    __repr__ = __str__
