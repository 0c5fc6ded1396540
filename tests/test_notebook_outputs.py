"""The committed notebook outputs come from the current code: re-run cheap,
deterministic notebooks in a fresh kernel and compare every printed line with
the committed one (figures and widget views are not compared)."""
import copy
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
# Cheap (a few seconds each) and free of timings.
NOTEBOOKS = ["notebooks/02_straight_through_estimators.ipynb",
             "notebooks/exercises/solutions/e4_training_step.ipynb"]


def printed(nb):
    """The text each code cell printed, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            out.append("".join(o.get("text", "") for o in cell.get("outputs", [])
                               if o.get("output_type") == "stream"))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_committed_outputs_equal_a_fresh_run(path):
    committed = nbformat.read(ROOT / path, as_version=4)
    fresh = copy.deepcopy(committed)
    nbclient.NotebookClient(fresh, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str((ROOT / path).parent)}}).execute()
    old, new = printed(committed), printed(fresh)
    assert any(old), f"{path}: no printed output committed; execute it with nbconvert (notebooks/README.md)"
    for k, (a, b) in enumerate(zip(old, new)):
        assert a == b, f"{path}, code cell {k}: committed output differs from a fresh run:\n{a}\n---\n{b}"
