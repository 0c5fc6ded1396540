"""Make the student release and the autograder of every exercise from its master notebook.

The masters are notebooks/exercises/master/*.ipynb, in otter-grader's assign
format (written by scripts/make_exercise_notebooks.py): the answer between
solution markers, one graded test per checker case. For each master this runs
``otter assign`` and writes

    OUT/<exercise>/student/      the notebook to hand out (no answer) and its public tests
    OUT/<exercise>/autograder/   the master with answers, its tests and the autograder zip

then checks that no line of the answer reached the student's notebook.
Usage (docs/teaching.md):

    python scripts/release_exercises.py OUT [--only e1 e4] [--no-run-tests] [--requirements FILE]

``--no-run-tests`` skips otter's run of the tests on the answers (faster; CI
runs the masters through nbmake anyway). ``--requirements FILE``: the pip
requirements the Docker/Gradescope autograder installs (a line that installs
dfbst_np); without it the zip is for ``otter run`` in an environment that has
dfbst_np already. Nothing in OUT is overwritten: an existing
OUT/<exercise> is refused.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MASTERS = ROOT / "notebooks" / "exercises" / "master"


class ReleaseError(Exception):
    """A user's mistake: one line, exit 2."""


def solution_lines(master) -> list:
    """The non-blank lines between ``# BEGIN SOLUTION NO PROMPT`` and ``# END SOLUTION`` in the master."""
    lines, inside = [], False
    for cell in master.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if line.strip().startswith("# BEGIN SOLUTION"):
                inside = True
            elif line.strip().startswith("# END SOLUTION"):
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def code_of(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def leaked(master, student) -> list:
    """The answer's lines that appear in the student's notebook (should be none)."""
    code = {line.strip() for line in code_of(student).splitlines()}
    return [line for line in solution_lines(master) if line in code]


def _with_requirements(master_path: Path, requirements: Path, work: Path) -> Path:
    import nbformat
    nb = nbformat.read(master_path, as_version=4)
    config = nb.cells[0]
    if not (config.cell_type == "raw" and config.source.startswith("# ASSIGNMENT CONFIG")):
        raise ReleaseError(f"{master_path}: the first cell is not otter's '# ASSIGNMENT CONFIG' cell")
    shutil.copy(requirements, work / "requirements.txt")
    config.source += "\nrequirements: requirements.txt"
    out = work / master_path.name
    nbformat.write(nb, out)
    return out


def release(out: Path, only=None, run_tests: bool = True, requirements=None) -> list:
    """Run otter assign on each master; return the exercise folders written."""
    import nbformat
    try:
        import otter  # noqa: F401  (the grading tool; docs/teaching.md says how to install it)
    except ImportError:
        raise ReleaseError("otter-grader is not installed: pip install otter-grader (docs/teaching.md)")
    masters = sorted(MASTERS.glob("*.ipynb"))
    if only:
        masters = [m for m in masters if m.name.split("_")[0] in only]
        missing = set(only) - {m.name.split("_")[0] for m in masters}
        if missing:
            raise ReleaseError(f"--only: no master notebook for {', '.join(sorted(missing))} "
                               f"(expected e1..e{len(list(MASTERS.glob('*.ipynb')))})")
    if requirements is not None and not Path(requirements).is_file():
        raise ReleaseError(f"--requirements: {requirements} is not a file")
    written = []
    for master in masters:
        dest = out / master.stem
        if dest.exists():
            raise ReleaseError(f"{dest} exists; choose an empty OUT (nothing is overwritten)")
        with tempfile.TemporaryDirectory() as tmp:
            source = master if requirements is None else _with_requirements(master, Path(requirements), Path(tmp))
            cmd = [sys.executable, "-m", "otter", "assign", str(source), str(dest.resolve())]
            if not run_tests:
                cmd.append("--no-run-tests")
            done = subprocess.run(cmd, cwd=source.parent, capture_output=True, text=True)
        if done.returncode != 0:
            # otter's own failure (e.g. a test failing on the answer): our bug, shown in full
            raise RuntimeError(f"otter assign failed on {master.name}:\n{done.stdout}\n{done.stderr}")
        student = nbformat.read(dest / "student" / master.name, as_version=4)
        bad = leaked(nbformat.read(master, as_version=4), student)
        if bad:
            raise RuntimeError(f"{master.name}: the student version contains the answer's line {bad[0]!r}")
        if "raise NotImplementedError" not in code_of(student):
            raise RuntimeError(f"{master.name}: the student version has no stub to fill in")
        written.append(dest)
        zips = sorted((dest / "autograder").glob("*.zip"))
        print(f"{master.stem}: student {dest / 'student'}, autograder "
              f"{zips[0] if zips else dest / 'autograder'}")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (created; existing exercises are refused)")
    parser.add_argument("--only", nargs="+", metavar="eN", help="only these exercises (e1 e2 e3 e4)")
    parser.add_argument("--no-run-tests", action="store_true", help="skip otter's run of the tests on the answers")
    parser.add_argument("--requirements", type=Path, help="pip requirements for the Docker/Gradescope autograder")
    args = parser.parse_args(argv)
    for name in args.only or []:
        if not re.fullmatch(r"e\d+", name):
            print(f"release_exercises: --only takes names like e1, got {name!r}", file=sys.stderr)
            return 2
    try:
        release(args.out, args.only, not args.no_run_tests, args.requirements)
    except ReleaseError as e:
        print(f"release_exercises: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
