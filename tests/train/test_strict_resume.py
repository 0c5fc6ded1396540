"""A strict resume (issue 22): every setting from config.json, never a default; the
checkpoint's schedule and optimiser settings are config.json's; no metrics row dropped or
replaced; a foreign or corrupt checkpoint named as the cause. Each refusal: one line,
exit 2, the run folder unchanged (sha256 of every file)."""
import json
import shutil

import numpy as np
import pytest

from dfbst_np.cli import main
from dfbst_np.train.checkpoint import load_checkpoint, save_checkpoint

from .folder_checks import SMALL, one_error_line, sha256_listing


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run (float64, 128 images, milestones [1]); tests copy it (run_dir, tests/train/conftest.py)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", "--epochs", "2", "--seed", "3", "--out", str(out), *SMALL]) == 0
    return out


def refused(run_dir, capsys, *words, args=("--epochs", "3")):
    """Resume ``run_dir``: exit 2, one line naming ``words``, nothing changed; the line."""
    before = sha256_listing(run_dir)
    assert main(["train", "--resume", str(run_dir), *args, "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err, *words)
    assert sha256_listing(run_dir) == before
    return line


def edit_config(run_dir, **changes):
    path = run_dir / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("key", ["seed", "train_limit", "epochs", "milestones", "lr", "model"])
def test_a_missing_config_key_is_refused_never_defaulted(run_dir, key, capsys):
    edit_config(run_dir, **{key: None})
    line = refused(run_dir, capsys, "config.json", f"'{key}'", "missing", "never a default")
    assert "metrics.csv" not in line


@pytest.mark.parametrize("changes, words", [
    (dict(lr=0.05), ["'sched/base_lr'", "0.1", "lr in config.json is 0.05"]),
    (dict(gamma=0.5), ["'sched/gamma'", "0.1", "gamma in config.json is 0.5"]),
    (dict(milestones=[]), ["'sched/milestones'", "[1]", "milestones in config.json is []"]),
    (dict(milestones=[2]), ["'sched/milestones'", "[1]", "milestones in config.json is [2]"]),
    (dict(momentum=0.5), ["'optim/momentum'", "0.9", "momentum in config.json is 0.5"]),
    (dict(weight_decay=0.0), ["'optim/weight_decay'", "0.0001", "weight_decay in config.json is 0.0"]),
])
def test_schedule_and_optimiser_are_cross_checked_with_config(run_dir, changes, words, capsys):
    edit_config(run_dir, **changes)
    refused(run_dir, capsys, "checkpoint.npz", *words)


@pytest.mark.parametrize("key, value, words", [
    ("sched/last_lr", 0.1, ["'sched/last_lr'", "0.1", "gives 0.010000000000000002", "epoch 2"]),
    ("optim/lr", 0.5, ["'optim/lr'", "0.5"]),
    ("sched/last_epoch", 1, ["'sched/last_epoch' is 1", "'meta/epoch' is 2"]),
    ("optim/nesterov", True, ["'optim/nesterov' is True"]),
])
def test_the_checkpoints_schedule_state_must_match_its_epoch(run_dir, key, value, words, capsys):
    path = run_dir / "checkpoint.npz"
    ck = load_checkpoint(path)
    ck[key] = np.array(value, dtype=ck[key].dtype)
    save_checkpoint(path, ck)
    refused(run_dir, capsys, "checkpoint.npz", *words)


def _extra_row(run_dir):
    path = run_dir / "metrics.csv"
    lines = path.read_text().splitlines()
    cells = lines[-1].split(",")
    cells[0] = "3"
    path.write_text("\n".join(lines + [",".join(cells)]) + "\n")


@pytest.mark.parametrize("epochs", ["2", "3", "4"])
def test_metrics_rows_beyond_the_checkpoint_are_never_dropped_or_replaced(run_dir, epochs, capsys):
    _extra_row(run_dir)
    refused(run_dir, capsys, "metrics.csv", "epochs 1 to 3", "only 2", "epochs 3 to 3",
            "drop or replace", "move", args=("--epochs", epochs))


def test_rows_beyond_an_old_checkpoint_without_history_are_kept(run_dir, capsys):
    path = run_dir / "checkpoint.npz"
    save_checkpoint(path, {k: v for k, v in load_checkpoint(path).items()
                           if not k.startswith("history/")})
    _extra_row(run_dir)
    refused(run_dir, capsys, "metrics.csv", "epochs 1 to 3", "only 2", "delete its rows after epoch 2")


def test_a_checkpoint_of_another_model_is_named_as_the_cause(run_dir, tmp_path, capsys):
    other = tmp_path / "lenet5"
    assert main(["train", "--model", "lenet_5", "--epochs", "1", "--out", str(other), *SMALL]) == 0
    capsys.readouterr()
    shutil.copy(other / "checkpoint.npz", run_dir / "checkpoint.npz")
    line = refused(run_dir, capsys, "checkpoint.npz", "'meta/model' is 'lenet_5'",
                   "'lenet300_100'", "another run")
    assert "metrics.csv" not in line


def test_a_checkpoint_of_another_run_of_the_same_model_is_suspected(run_dir, tmp_path, capsys):
    other = tmp_path / "seed4"
    assert main(["train", "--epochs", "2", "--seed", "4", "--out", str(other), *SMALL]) == 0
    capsys.readouterr()
    shutil.copy(other / "checkpoint.npz", run_dir / "checkpoint.npz")
    refused(run_dir, capsys, "metrics.csv", "checkpoint.npz", "another run",
            "put back the run's own checkpoint")


@pytest.mark.parametrize("key, bad", [("model/fc1.weight", np.nan), ("model/fc3.bias", np.inf),
                                      ("optim/momentum_buffer.fc2.weight", np.nan)])
def test_nan_weights_are_a_corrupt_checkpoint_not_a_divergence(run_dir, key, bad, capsys):
    path = run_dir / "checkpoint.npz"
    ck = load_checkpoint(path)
    ck[key] = ck[key].copy()
    ck[key].flat[0] = bad
    save_checkpoint(path, ck)
    line = refused(run_dir, capsys, "checkpoint.npz", repr(key), "NaN or infinite", "corrupt")
    assert "smaller learning rate" not in line          # and config.json unchanged (refused())


def test_no_config_json_beside_a_checkpoint_says_so(run_dir, capsys):
    (run_dir / "config.json").unlink()
    line = refused(run_dir, capsys, "checkpoint.npz", "no config.json", "put its config.json back",
                   args=())
    assert "start a new run there" not in line
    empty = run_dir.parent / "empty"
    empty.mkdir()
    assert main(["train", "--resume", str(empty), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "is empty", f"--out {empty}")
    assert list(empty.iterdir()) == []


def test_deeply_nested_config_json_is_one_line(run_dir, capsys):
    (run_dir / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(run_dir, capsys, "config.json", "nested too deeply", args=())
    # plot does not need config.json: it titles the figures with the folder's name instead.
    assert main(["plot", str(run_dir)]) == 0


def test_a_number_too_long_to_read_in_config_json_is_one_line(run_dir, capsys):
    path = run_dir / "config.json"
    path.write_text(path.read_text().replace('"seed": 3', '"seed": ' + "9" * 5000))
    refused(run_dir, capsys, "config.json", "not a valid config.json", "digits", args=())


def test_a_config_json_folder_or_checkpoint_folder_is_one_line(run_dir, capsys):
    ck = run_dir / "checkpoint.npz"
    ck.unlink()
    ck.mkdir()
    refused(run_dir, capsys, "checkpoint.npz", "a folder is there", args=())


def test_metrics_csv_a_folder_is_refused_by_resume_and_plot(run_dir, capsys):
    (run_dir / "metrics.csv").unlink()
    (run_dir / "metrics.csv").mkdir()
    refused(run_dir, capsys, "metrics.csv", "not a file")
    before = sha256_listing(run_dir)
    assert main(["plot", str(run_dir)]) == 2
    one_error_line(capsys.readouterr().err, "metrics.csv", "not a file")
    assert sha256_listing(run_dir) == before


def _with_header(path, key, shape):
    """Rewrite ``key``'s npy header in the checkpoint to declare ``shape`` (data unchanged)."""
    import zipfile
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    data = members[key + ".npy"]
    header_len = int.from_bytes(data[8:10], "little")
    body = data[10 + header_len:]
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (header_len - len(header) - 1) + b"\n"
    members[key + ".npy"] = data[:10] + header + body
    with zipfile.ZipFile(path, "w") as zf:
        for name, b in members.items():
            zf.writestr(name, b)


@pytest.mark.parametrize("shape", [(2 ** 40,), (2 ** 20, 2 ** 20), (300, 7)])
def test_npy_headers_are_checked_before_any_allocation(run_dir, shape, capsys):
    # 2**40 float64 would be an 8 TiB allocation: refused from the header, never attempted.
    _with_header(run_dir / "checkpoint.npz", "model/fc1.weight", shape)
    refused(run_dir, capsys, "checkpoint.npz", "'model/fc1.weight'", f"declares shape {shape}",
            "but holds")


def test_an_entry_of_the_right_size_but_the_wrong_shape_is_refused_from_its_header(run_dir, capsys):
    w = load_checkpoint(run_dir / "checkpoint.npz")["model/fc1.weight"]
    _with_header(run_dir / "checkpoint.npz", "model/fc1.weight", w.shape[::-1])
    refused(run_dir, capsys, "checkpoint.npz", "'model/fc1.weight'", f"shape {w.shape[::-1]}",
            f"expected {w.shape}")
