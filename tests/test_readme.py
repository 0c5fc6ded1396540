"""Every ```python block of README.md runs as written.

Each block, whichever README holds when the tests run, is run verbatim in a
fresh interpreter (``sys.executable -c``) from an empty temporary working
directory and must exit 0. The interpreter imports this checkout's
dfbst_np (its folder goes first on PYTHONPATH); nothing else is set up.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPENING = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
PYTHON = {"python", "py", "python3"}


def code_blocks(text: str):
    """[(line of the opening fence, info word, code)] of every fenced block (CommonMark fences)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = OPENING.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].lower()
        start, body, i = i + 1, [], i + 1
        closing = re.compile(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}[ \t]*$")
        while i < len(lines) and not closing.match(lines[i]):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            i += 1
        blocks.append((start, info, "\n".join(body) + "\n"))
        i += 1                                       # past the closing fence
    return blocks


def python_blocks(text: str):
    return [(line, code) for line, info, code in code_blocks(text) if info in PYTHON]


BLOCKS = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_block_finder():
    text = ("# t\n```bash\npython -m x\n```\n\n```python\nimport os\nprint(1)\n```\n"
            "  ~~~py\n  a = 1\n  ```\n  ~~~\n````python3 title\nb = 2\n````\n```\nplain\n```\n")
    assert python_blocks(text) == [(6, "import os\nprint(1)\n"), (10, "a = 1\n```\n"),
                                   (14, "b = 2\n")]
    assert [info for _, info, _ in code_blocks(text)] == ["bash", "python", "py", "python3", ""]


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (f"README.md line {line}: the block exited {r.returncode}\n"
                               f"{r.stderr[-4000:]}")
