"""Bad values up front, a broken PyTorch and Ctrl-C while loading (issue 22): one line, exit 2
(130 for Ctrl-C), nothing written."""
import os
import sys
from pathlib import Path

import pytest

from dfbst_np.cli import main, parser

from .folder_checks import SMALL, cli, one_error_line, sha256_listing

BIG = "99999999999999999999999"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flags, named", [
    (["--epochs", BIG], "--epochs"), (["--milestones", BIG], "--milestones"),
    (["--milestones", "5", BIG], "--milestones"), (["--threads", BIG], "--threads"),
    (["--seed", BIG], "--seed"), (["--seed", "-1"], "--seed"), (["--batch-size", BIG], "--batch-size"),
    (["--train-limit", BIG], "--train-limit"), (["--test-limit", BIG], "--test-limit"),
    (["--epochs", "1000001"], "--epochs"),
])
def test_numeric_flags_are_bounded_up_front(flags, named, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", *flags, "--out", str(out), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, named, "from")
    assert not out.exists()


@pytest.mark.parametrize("args, named", [
    (["train", "--epochs", "1e3"], "--epochs"), (["train", "--milestones", "0"], "--milestones"),
    (["train", "--model", "vgg19"], "--model"), (["train", "--colour", "red"], "--colour"),
    (["check-grads", "--seed", "x"], "--seed"), (["bench", "--threads", "two"], "--threads"),
    (["plot"], "RUN_DIR"), (["frobnicate"], "frobnicate"),
])
def test_usage_mistakes_are_one_line(args, named, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    one_error_line(capsys.readouterr().err, named, "--help")


def test_a_resume_with_unbounded_flags_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    before = sha256_listing(out)
    for flags, named in ((["--epochs", BIG], "--epochs"), (["--threads", BIG], "--threads")):
        assert main(["train", "--resume", str(out), *flags, "--no-progress"]) == 2
        one_error_line(capsys.readouterr().err, named)
        assert sha256_listing(out) == before


@pytest.mark.parametrize("flags, named", [(["--seed", BIG], "--seed"), (["--seed", "-1"], "--seed"),
                                          (["--batch-size", BIG], "--batch-size"),
                                          (["--tol", "nan"], "--tol")])
def test_check_grads_values_are_bounded(flags, named, capsys):
    assert main(["check-grads", *flags]) == 2
    one_error_line(capsys.readouterr().err, named)


@pytest.mark.parametrize("model, dataset", [("vgg16", "sample"), ("resnet18", "fashion_mnist"),
                                            ("lenet_5", "cifar10"), ("lenet300_100", "cifar100")])
def test_a_model_that_cannot_take_the_dataset_is_refused_before_the_folder(model, dataset, tmp_path,
                                                                           monkeypatch, capsys):
    import dfbst_np.train.run as run_module

    def never(cfg):
        raise AssertionError("the data was loaded before the settings were checked")

    monkeypatch.setattr(run_module, "load_data", never)
    out = tmp_path / "o"
    assert main(["train", "--model", model, "--dataset", dataset, "--out", str(out),
                 "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, f"--model {model}", f"--dataset {dataset}", "images")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--resume"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_folder_name_is_refused(flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", flag, value, "--epochs", "1", *SMALL]) == 2
    one_error_line(capsys.readouterr().err, flag, "names no folder")
    assert list(tmp_path.iterdir()) == []             # not the default runs/... either


def test_bench_help_says_how_to_skip_the_unpinned_rows():
    bench = parser()._subparsers._group_actions[0].choices["bench"]
    text = bench.format_help()
    assert "none: skip" not in text and "the flag with no value skips them" in " ".join(text.split())
    assert parser().parse_args(["bench", "--unpinned-densities"]).unpinned_densities == []


@pytest.mark.parametrize("args", [["--threads", "99999999999999999999999"], ["--threads", "0"],
                                  ["--batches", "64", "99999999999999999999999"],
                                  ["--rounds", "99999999999999999999999"], ["--steps", "-1"]])
def test_bench_numeric_flags_are_bounded_up_front(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--no-torch", "--out", "b", *args]) == 2
    one_error_line(capsys.readouterr().err, args[0], "must be integers from 1 to")
    assert list(tmp_path.iterdir()) == []             # refused before the results folder is made


# -- a broken PyTorch --------------------------------------------------------------------------

class _Broken:
    """A meta-path finder whose torch raises ``error`` when imported, as a broken install does."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        import importlib.util
        return importlib.util.spec_from_loader(name, self) if name == "torch" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise self.error


@pytest.mark.parametrize("error", [ImportError("libtorch_cpu.so: cannot open shared object file"),
                                   OSError("[WinError 126] the module could not be found"),
                                   RuntimeError("CUDA driver too old")])
def test_a_broken_torch_is_one_line_for_every_command(error, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)        # restored after the test
    monkeypatch.setattr(sys, "meta_path", [_Broken(error), *sys.meta_path])
    run = tmp_path / "run"
    for args, who in ((["train", "--backend", "torch", "--out", str(run), *SMALL], "--backend torch"),
                      (["check-grads"], "check-grads"),
                      (["verify", "--model", "m.py:f", "--step", "m.py:g"], "verify"),
                      (["bench", "--quick"], "bench")):
        assert main(args) == 2, args
        one_error_line(capsys.readouterr().err, who, "PyTorch cannot be imported",
                       type(error).__name__, str(error))
        assert not run.exists()


def _with(folder):
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}


def test_resuming_a_torch_run_with_a_broken_torch_changes_nothing(tmp_path, capsys):
    import json
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "backend": "torch"}))
    before = sha256_listing(out)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "torch.py").write_text("raise OSError('libc10.so: cannot open shared object file')\n")
    r = cli("train", "--resume", out, "--epochs", "2", "--no-progress", env=_with(folder))
    assert r.returncode == 2
    one_error_line(r.stderr, "--backend torch", "PyTorch cannot be imported", "OSError", "libc10.so")
    assert sha256_listing(out) == before


# -- Ctrl-C while the program loads -------------------------------------------------------------

@pytest.mark.parametrize("module", ["dfbst_np.cli", "numpy", "tqdm"])
def test_ctrl_c_while_loading_is_one_line(module, tmp_path):
    # A Ctrl-C arrives while `module` is being imported: deterministic, no timing.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n")
    r = cli("train", "--out", tmp_path / "run", *SMALL, env=_with(tmp_path))
    assert (r.returncode, r.stderr.strip()) in ((130, "interrupted"),
                                                 (130, "interrupted; nothing was written")), r.stderr
    assert not (tmp_path / "run").exists()
