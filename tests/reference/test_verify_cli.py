"""``python -m dfbst_np verify``: a user's files, imported and verified on the committed sample.

What is proven: on a user file written here (the project's reference model
and trainer as "their code"), the command exits 0 and prints an OK report;
the same file with a planted bug (no weight decay on the thresholds) exits 1
and names the first divergence (fc1.threshold, stage update) with stress
on; a factory that does not exist, a file that does not exist, a factory
with the wrong signature and a checkpoint that does not fit exit 2 with one
line on stderr naming the flag. A checkpoint written with ``torch.save``
is loaded (weights only) and changes what is verified. Every flag has help
text. One run goes through a subprocess, as a user types it.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dfbst_np.cli import main, parser

REPO = Path(__file__).resolve().parents[2]

USER_CODE = textwrap.dedent('''
    import torch
    from dfbst_np.reference import ReferenceTrainer, build


    def make_model():
        torch.manual_seed(0)
        return build("lenet300_100", method="dfbst", dtype=torch.float64)


    class NoDecayOnThresholds(ReferenceTrainer):
        def __init__(self, model):
            super().__init__(model)
            t = [p for n, p in model.named_parameters() if n.endswith("threshold")]
            rest = [p for n, p in model.named_parameters() if not n.endswith("threshold")]
            self.optimizer = torch.optim.SGD([{"params": rest}, {"params": t, "weight_decay": 0.0}],
                                             lr=0.1, momentum=0.9, weight_decay=1e-4)
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, [80, 120])


    def make_step(model):
        trainer = ReferenceTrainer(model)
        return (lambda m, x, y, epoch, index: trainer.step(x, y, epoch, index)), trainer.end_epoch


    def make_buggy_step(model):
        trainer = NoDecayOnThresholds(model)
        return lambda m, x, y, epoch, index: trainer.step(x, y, epoch, index)


    def make_step_wrong(model, optimizer):
        raise AssertionError("never called")
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_dfbst.py"
    path.write_text(USER_CODE)
    return path


def args(path, step="make_step", *extra):
    return ["verify", "--model", f"{path}:make_model", "--step", f"{path}:{step}",
            "--schedule", "1:0,1:1", "--batch-size", "4", *extra]


def test_correct_code_exits_0_with_the_headline_and_table_on_request(user_file, capsys):
    assert main(args(user_file)) == 0
    out = capsys.readouterr().out
    assert out.startswith("verify: OK") and "coverage:" in out
    assert "fc1.dmask" not in out and "--table prints them all" in out and len(out.splitlines()) < 12
    assert main(args(user_file, "make_step", "--table")) == 0
    out = capsys.readouterr().out
    assert out.startswith("verify: OK") and "fc1.dmask" in out and len(out.splitlines()) > 40


def test_planted_bug_exits_1_and_names_it(user_file, capsys):
    assert main(args(user_file, "make_buggy_step", "--stress")) == 1
    out = capsys.readouterr().out
    assert out.startswith("verify: DIVERGENCE")
    assert "first divergence: fc1.threshold differs at epoch 1, index 0, stage update" in out
    assert "no weight decay on thresholds" in out


@pytest.mark.parametrize("model,step,message", [
    ("{f}:make_modle", "{f}:make_step", "--model: {f} has no 'make_modle'"),
    ("{f}:make_model", "{f}:make_stp", "--step: {f} has no 'make_stp'"),
    ("{d}/nowhere.py:make_model", "{f}:make_step", "--model: no such file '{d}/nowhere.py'"),
    ("{f}:make_model", "{f}:make_step_wrong", "--step: make_step_wrong(model, optimizer) must be "
                                              "callable as FACTORY(model)"),
    ("{f}", "{f}:make_step", "--model expects MODULE_OR_FILE:FACTORY"),
    ("no_such_module_xyz:make", "{f}:make_step", "--model: no module named 'no_such_module_xyz'"),
])
def test_bad_input_exits_2_with_one_line(user_file, capsys, model, step, message):
    fmt = dict(f=user_file, d=user_file.parent)
    argv = ["verify", "--model", model.format(**fmt), "--step", step.format(**fmt)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == "error: " + message.format(**fmt) or err.startswith("error: " + message.format(**fmt))
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_checkpoint_is_loaded_weights_only(user_file, tmp_path, capsys):
    from dfbst_np.reference import build
    torch.manual_seed(5)
    other = build("lenet300_100", method="dfbst", dtype=torch.float32)
    ckpt = tmp_path / "other.pth"
    torch.save(other.state_dict(), ckpt)
    assert main(args(user_file, "make_step", "--checkpoint", str(ckpt))) == 0
    assert capsys.readouterr().out.startswith("verify: OK")
    # a checkpoint of another architecture does not fit: exit 2, naming the flag
    torch.save(build("lenet_5", method="dfbst").state_dict(), tmp_path / "lenet5.pth")
    assert main(args(user_file, "make_step", "--checkpoint", str(tmp_path / "lenet5.pth"))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --checkpoint {tmp_path / 'lenet5.pth'}: ") and "missing" in err
    assert main(args(user_file, "make_step", "--checkpoint", str(tmp_path / "none.pth"))) == 2
    assert "--checkpoint: no such file" in capsys.readouterr().err


def test_sample_batches_take_the_model_input_shape():
    from dfbst_np.reference.verify_cli import UserInputError, sample_batches
    (x0, y0), (x1, y1) = sample_batches(2, 4, (3, 32, 32))
    assert x0.shape == (4, 3, 32, 32) and x0.dtype == np.float64 and y1.shape == (4,)
    # the 28x28 image sits in the centre of every channel, zeros around it
    assert np.all(x0[:, :, :2] == 0) and np.all(x0[:, :, 30:] == 0)
    np.testing.assert_array_equal(x0[:, 0], x0[:, 2])
    assert x0[:, :, 2:30, 2:30].max() > 0
    with pytest.raises(UserInputError, match="at least the sample's 28x28"):
        sample_batches(1, 4, (1, 16, 16))


def test_every_flag_has_help():
    sub = parser()._subparsers._group_actions[0].choices["verify"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings


def test_as_a_user_runs_it(user_file):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "dfbst_np"] + args(user_file, "make_buggy_step", "--stress"),
                          cwd=user_file.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "stage update" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("extra,message", [
    (["--rtol", "nan"], "--rtol expects a finite number >= 0, got nan"),
    (["--rtol", "-1"], "--rtol expects a finite number >= 0, got -1.0"),
    (["--atol", "nan"], "--atol expects a finite number >= 0, got nan"),
    (["--atol", "inf"], "--atol expects a finite number >= 0, got inf"),
    (["--beta", "-5"], "--beta expects a finite number >= 0, got -5.0"),
    (["--lr", "inf"], "--lr expects a finite number >= 0, got inf"),
    (["--clip-norm", "0"], "--clip-norm expects a finite number > 0, got 0.0"),
    (["--batch-size", "-1"], "--batch-size expects an integer >= 1, got -1"),
    (["--input-shape", "3,100000,100000"], "--input-shape 3,100000,100000 with --batch-size 4"),
    (["--input-shape", "3,x,2"], "--input-shape expects C,H,W"),
    (["--name-map", "fc1"], "--name-map expects YOURS=OURS"),
])
def test_numeric_flags_are_validated_with_one_line(user_file, capsys, extra, message):
    # README's planted bug: a bad tolerance must never turn it into an OK
    assert main(args(user_file, "make_buggy_step", "--stress", *extra)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: " + message), captured.err
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""


MODEL_FILE = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Masked(nn.Module):
        """A researcher's masked linear layer (float32 masks, not exposed)."""

        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_out, n_in) * 0.1)
            self.bias = nn.Parameter(torch.zeros(n_out))
            self.threshold = nn.Parameter(torch.zeros(n_out))
            self.dthreshold = nn.Parameter(torch.zeros(n_out))

        def forward(self, x):
            return x @ (self.weight * (self.weight.abs() > self.threshold.abs()[:, None]).float()).T


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), Masked(784, 10))

        def forward(self, x):
            return self.body(x)


    def make_model():
        torch.manual_seed(0)
        return Net()
''')

STEP_FILE = textwrap.dedent('''
    import torch
    import my_model


    def make_step(model):
        # a user's isinstance check: it fails when my_model.py is loaded twice
        layers = [m for m in model.modules() if isinstance(m, my_model.Masked)]
        assert layers, "my_model.Masked is another class: the file was loaded twice"
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(m, x, y, epoch, index):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss
        return step
''')


def test_a_file_imported_by_the_step_file_is_loaded_once(tmp_path, capsys):
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    (tmp_path / "my_step.py").write_text(STEP_FILE)
    argv = ["verify", "--model", f"{tmp_path / 'my_model.py'}:make_model",
            "--step", f"{tmp_path / 'my_step.py'}:make_step", "--schedule", "1:0", "--batch-size", "2"]
    try:
        code = main(argv)
        captured = capsys.readouterr()
        # the step itself is not DFBST: the verdict is a divergence (1), not a refusal (2)
        assert code == 1, captured.err
        assert "loaded twice" not in captured.err
        # the masks' float32 dtype was read from the forward, and the header says so
        assert "float32 masks, as your forward makes them" in captured.out
        # CLI messages name flags, never Python arguments
        for python_name in ("name_map=", "np_model=", "stress=True", "float32_masks="):
            assert python_name not in captured.out + captured.err
        assert main(argv + ["--float32-masks", "off"]) == 1
        assert "float64 masks, as passed" in capsys.readouterr().out
    finally:
        for name in ("my_model", "my_step"):
            sys.modules.pop(name, None)
        while str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


def test_name_map_flag(tmp_path, capsys):
    wrapped = textwrap.dedent('''
        import torch
        import torch.nn as nn
        from dfbst_np.reference import ReferenceTrainer, build


        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.net = build("lenet300_100", method="dfbst", dtype=torch.float64)

            def forward(self, x):
                return self.net(x)


        def make_model():
            return Wrapped()


        def make_step(model):
            trainer = ReferenceTrainer(model)
            return lambda m, x, y, epoch, index: trainer.step(x, y, epoch, index)
    ''')
    path = tmp_path / "wrapped_user.py"
    path.write_text(wrapped)
    base = ["verify", "--model", f"{path}:make_model", "--step", f"{path}:make_step",
            "--schedule", "1:0", "--batch-size", "2"]
    assert main(base + ["--name-map", "net="]) == 0
    assert "dfbst_np's lenet300_100" in capsys.readouterr().out
    (tmp_path / "map.json").write_text('{"net": ""}')
    assert main(base + ["--name-map", str(tmp_path / "map.json")]) == 0
    assert main(base + ["--name-map", "net=x"]) == 2
    err = capsys.readouterr().err
    assert "pass --name-map x=" in err and "name_map=" not in err and len(err.splitlines()) == 1
    sys.modules.pop("wrapped_user", None)
