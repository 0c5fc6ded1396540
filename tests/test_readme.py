"""Every ```python block of README.md, and of the pages under docs/ that README
links to (README is the front page; the detail moved to those pages), runs as
written.

Each block, whichever README and pages hold when the tests run, is run
verbatim in a fresh interpreter (``sys.executable -c``) from an empty
temporary working directory and must exit 0. The interpreter imports this
checkout's dfbst_np (its folder goes first on PYTHONPATH); nothing else is
set up. docs/SPEC.md is the exception: its blocks are the interface's
signatures, not programs.
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


NOT_PROGRAMS = {"docs/SPEC.md"}


def linked_pages(text: str):
    """The docs/*.md pages a Markdown text links to, in order, each once."""
    found = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", text)
    return list(dict.fromkeys(found))


README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = ["README.md"] + [p for p in linked_pages(README) if p not in NOT_PROGRAMS]
BLOCKS = [(page, line, code) for page in PAGES if (REPO / page).is_file()
          for line, code in python_blocks((REPO / page).read_text(encoding="utf-8"))]


def test_the_block_finder():
    text = ("# t\n```bash\npython -m x\n```\n\n```python\nimport os\nprint(1)\n```\n"
            "  ~~~py\n  a = 1\n  ```\n  ~~~\n````python3 title\nb = 2\n````\n```\nplain\n```\n")
    assert python_blocks(text) == [(6, "import os\nprint(1)\n"), (10, "a = 1\n```\n"),
                                   (14, "b = 2\n")]
    assert [info for _, info, _ in code_blocks(text)] == ["bash", "python", "py", "python3", ""]


def test_readme_has_python_blocks():
    assert any(page == "README.md" for page, _, _ in BLOCKS), "README.md has no ```python block"


def test_the_page_finder():
    text = "see [a](docs/a.md), [b](docs/b.md#part), [a again](docs/a.md), [x](notebooks/README.md), `docs/c.md`"
    assert linked_pages(text) == ["docs/a.md", "docs/b.md"]


def test_every_page_readme_links_to_exists():
    missing = [p for p in linked_pages(README) if not (REPO / p).is_file()]
    assert not missing, f"README.md links to pages that do not exist: {missing}"


@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_readme_python_block_runs(page, line, code, tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (f"{page} line {line}: the block exited {r.returncode}\n"
                               f"{r.stderr[-4000:]}")
