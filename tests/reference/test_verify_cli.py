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


def test_correct_code_exits_0(user_file, capsys):
    assert main(args(user_file)) == 0
    out = capsys.readouterr().out
    assert out.startswith("verify: OK") and "fc1.dmask" in out and "coverage:" in out


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
