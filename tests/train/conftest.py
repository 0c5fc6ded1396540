"""Fixtures the run-folder tests share."""
import shutil

import pytest

from dfbst_np.cli import main

from .folder_checks import SMALL


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run (float64, 128 images); tests copy it (``run_dir``)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"
