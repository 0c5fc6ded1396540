"""Choosing a backend (dfbst_np/train/backend.py): the errors a user can meet, without torch too.

The torch backend's numbers are compared with the NumPy backend's in
tests/reference/test_backend.py.
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dfbst_np.errors import ConfigError
from dfbst_np.train.backend import BackendUnavailable, NumpyBackend, check_backend, trainer_for
from dfbst_np.train.config import RunConfig, default_config
from dfbst_np.train.run import Run


def run_cli(code_prefix, *args):
    code = code_prefix + "; from dfbst_np.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)


def test_without_torch_backend_torch_says_how_to_install_it(tmp_path):
    # sys.modules['torch'] = None makes every `import torch` fail, as on a machine without it.
    r = run_cli("import sys; sys.modules['torch'] = None", "train", "--backend", "torch",
                "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --backend torch: PyTorch is not installed; "
        "install it with: pip install torch==2.13.0"]
    assert not (tmp_path / "o").exists()


def test_without_torch_the_numpy_backend_trains(tmp_path):
    r = run_cli("import sys; sys.modules['torch'] = None", "train", "--epochs", "1",
                "--train-limit", "64", "--test-limit", "50", "--out", str(tmp_path / "o"),
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "checkpoint.npz").is_file()


@pytest.mark.parametrize("changes, words", [
    (dict(device="cuda"), "--device cuda needs --backend torch"),
    (dict(backend="jax"), "backend must be 'numpy' or 'torch', got 'jax'"),
    (dict(backend="torch", device="tpu"), "device must be 'cpu' or 'cuda', got 'tpu'"),
    (dict(backend="torch", weight_grad="predicted"), "--weight-grad predicted"),
])
def test_bad_backend_choices_fail_before_any_data(changes, words, tmp_path):
    cfg = dataclasses.replace(default_config(dataset="no-such-dataset"), **changes)
    with pytest.raises(ConfigError, match=words):
        Run(cfg, tmp_path / "o")          # the data would fail too, but later
    assert issubclass(BackendUnavailable, ConfigError)       # the CLI's one-line errors


def test_numpy_is_the_default_backend_and_old_configs_load(tmp_path):
    cfg = RunConfig()
    assert (cfg.backend, cfg.device) == ("numpy", "cpu")
    check_backend(cfg)
    assert isinstance(trainer_for(default_config(), num_classes=10), NumpyBackend)
    path = tmp_path / "config.json"
    old = json.loads((Path(__file__).parents[2] / "results" / "fashion_mnist"
                      / "lenet_5-dense-e20" / "config.json").read_text())
    assert "backend" not in old                                # written before backends existed
    path.write_text(json.dumps(old))
    assert RunConfig.load(path).backend == "numpy"


@pytest.mark.parametrize("flag", [["--kernel-path", "sparse"], ["--textbook"]])
def test_numpy_only_flags_are_refused_with_backend_torch(flag, tmp_path, capsys):
    from dfbst_np.cli import main
    out = tmp_path / "run"
    assert main(["train", "--backend", "torch", *flag, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert flag[0] in err and "--backend torch" in err and "Traceback" not in err
    assert not out.exists()
