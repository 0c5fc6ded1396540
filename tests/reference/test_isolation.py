"""Only dfbst_np.reference may import torch; without torch it says how to get it."""
import pathlib
import re
import subprocess
import sys

import dfbst_np

PKG = pathlib.Path(dfbst_np.__file__).parent
TORCH_IMPORT = re.compile(r"^\s*(import torch|from torch[\s.])", re.MULTILINE)


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PKG.parent, timeout=60)


def test_no_torch_import_outside_reference():
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if "reference" not in p.relative_to(PKG).parts and TORCH_IMPORT.search(p.read_text())]
    assert offenders == []


def test_import_dfbst_np_does_not_load_torch():
    r = run("import sys, dfbst_np; assert 'torch' not in sys.modules, 'torch was imported'")
    assert r.returncode == 0, r.stderr


def test_reference_without_torch_gives_install_hint():
    r = run("import sys; sys.modules['torch'] = None\n"
            "try:\n    import dfbst_np.reference\nexcept ImportError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr
    assert "pip install torch==2.13.0" in r.stdout


def test_check_grads_without_torch_says_how_to_install_it_once():
    r = run("import sys; sys.modules['torch'] = None\n"
            "from dfbst_np.cli import main\nsys.exit(main(['check-grads']))\n")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: check-grads:"), r.stderr
    assert lines[0].count("pip install torch==2.13.0") == 1
