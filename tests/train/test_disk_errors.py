"""A user's disk (issue 22): full, read-only, names too long, a folder where a file should be.

Every such failure is one line and exit 2, and leaves nothing half-written: the checks
come before any write (config.json last among them), and every file is written to a
temporary name and renamed. The full and read-only disks are real: a small tmpfs and a
read-only bind mount (root only; skipped where mounting is not permitted, always
unmounted).
"""
import contextlib
import shutil
import subprocess

import pytest

import dfbst_np.train.run as run_module
from dfbst_np.cli import main
from dfbst_np.train.checkpoint import load_checkpoint
from dfbst_np.train.run import read_metrics

from .folder_checks import SMALL, one_error_line, sha256_listing


def _mount(*args):
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        pytest.skip(f"no mount command here ({e})")


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of ``size`` (e.g. "300k") mounted at ``path`` for the block's duration."""
    path.mkdir(exist_ok=True)
    r = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=60)


@contextlib.contextmanager
def read_only(source, path):
    """``source`` bind-mounted read-only at ``path`` for the block's duration."""
    path.mkdir()
    r = _mount("--bind", str(source), str(path))
    if r.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {r.stderr.strip()}")
    try:
        r = _mount("-o", "remount,bind,ro", str(path))
        if r.returncode != 0:
            pytest.skip(f"read-only remounts are not permitted here: {r.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=60)


def fill(folder):
    """Write a ballast file into ``folder`` until its disk is full; return the file."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return ballast


def test_a_new_run_on_a_full_disk_writes_nothing(tmp_path, capsys):
    with tmpfs(tmp_path / "small", "300k") as disk:
        for out in (disk / "new", disk):
            assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 2
            one_error_line(capsys.readouterr().err, "KiB free", "checkpoint", "nothing was written")
            assert sha256_listing(disk) == {}


def test_a_resume_that_would_not_fit_changes_nothing(run_dir, tmp_path, capsys):
    size = (run_dir / "checkpoint.npz").stat().st_size
    with tmpfs(tmp_path / "small", f"{size // 1024 + 1024}k") as disk:
        shutil.copytree(run_dir, disk / "run")
        before = sha256_listing(disk)
        assert main(["train", "--resume", str(disk / "run"), "--epochs", "3", "--no-progress"]) == 2
        one_error_line(capsys.readouterr().err, "KiB free", "nothing was written")
        assert sha256_listing(disk) == before           # config.json (epochs 3) not rewritten


def test_a_disk_that_fills_up_during_a_run_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    with tmpfs(tmp_path / "disk", "12m") as disk:
        out = disk / "run"
        real = run_module.epoch_line

        def fill_after_epoch_1(epoch, row):
            if epoch == 1:
                fill(disk)
            return real(epoch, row)

        monkeypatch.setattr(run_module, "epoch_line", fill_after_epoch_1)
        assert main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 2
        one_error_line(capsys.readouterr().err, out / "checkpoint.npz", "No space left on device",
                       "disk is full")
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "config.json",
                                                         "metrics.csv"]   # no temporary file
        assert int(load_checkpoint(out / "checkpoint.npz")["meta/epoch"]) == 1
        assert len(read_metrics(out / "metrics.csv")) == 1
        (disk / "ballast").unlink()
        monkeypatch.setattr(run_module, "epoch_line", real)
        assert main(["train", "--resume", str(out), "--no-progress"]) == 0
        assert [r["epoch"] for r in read_metrics(out / "metrics.csv")] == [1, 2]


def test_plot_never_leaves_an_empty_png(run_dir, tmp_path, capsys):
    with tmpfs(tmp_path / "small", "300k") as disk:
        folder = disk / "run"
        folder.mkdir()
        for name in ("config.json", "metrics.csv"):
            shutil.copy(run_dir / name, folder / name)
        fill(disk)
        before = sha256_listing(disk)
        assert main(["plot", str(folder)]) == 2
        one_error_line(capsys.readouterr().err, "accuracy.png", "No space left on device")
        assert sha256_listing(disk) == before           # no PNG, empty or not; no temporary file


def test_plot_refuses_a_png_folder_and_a_foreign_metrics_csv_before_drawing(run_dir, capsys):
    (run_dir / "flops.png").mkdir()
    before = sha256_listing(run_dir)
    assert main(["plot", str(run_dir)]) == 2
    one_error_line(capsys.readouterr().err, "flops.png", "not a file")
    assert sha256_listing(run_dir) == before            # accuracy.png was not drawn either
    (run_dir / "flops.png").rmdir()
    good = (run_dir / "metrics.csv").read_text()
    for column in ("train_acc", "density"):
        lines = good.splitlines()
        header = lines[0].split(",")
        k = header.index(column)
        (run_dir / "metrics.csv").write_text(
            "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != k)
                      for line in lines) + "\n")
        before = sha256_listing(run_dir)
        assert main(["plot", str(run_dir)]) == 2
        one_error_line(capsys.readouterr().err, "metrics.csv", f"no column '{column}'")
        assert sha256_listing(run_dir) == before


def test_a_read_only_disk_is_one_line_and_nothing_moves(run_dir, tmp_path, capsys):
    with read_only(run_dir, tmp_path / "ro") as ro:
        before = sha256_listing(ro)
        for args in (["train", "--resume", str(ro), "--epochs", "3", "--no-progress"],
                     ["train", "--out", str(ro), "--overwrite", "--epochs", "1", *SMALL],
                     ["train", "--out", str(ro / "new"), "--epochs", "1", *SMALL],
                     ["plot", str(ro)]):
            assert main(args) == 2, args
            one_error_line(capsys.readouterr().err, "read-only", ro)
            assert sha256_listing(ro) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "run"]   # nothing moved aside


def test_names_too_long_are_one_line(tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    for args in (["train", "--out", str(long), "--epochs", "1", *SMALL],
                 ["train", "--out", str(long / "run"), "--epochs", "1", *SMALL],
                 ["train", "--resume", str(long), "--no-progress"],
                 ["plot", str(long)]):
        assert main(args) == 2, args
        one_error_line(capsys.readouterr().err, "too long")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", [".", "..", "/", "CWD", "PARENT"])
def test_dot_dotdot_root_and_the_current_folder_are_never_moved_aside(out, tmp_path, monkeypatch,
                                                                       capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    out = {"CWD": str(work), "PARENT": str(tmp_path)}.get(out, out)
    before = sha256_listing(tmp_path)
    assert main(["train", "--out", out, "--overwrite", "--epochs", "1", *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "--overwrite never moves", "--out")
    assert sha256_listing(tmp_path) == before
    if out in (".", str(work)):         # and without --overwrite, no hint to use it
        assert main(["train", "--out", out, "--epochs", "1", *SMALL]) == 2
        line = one_error_line(capsys.readouterr().err, "not a run")
        assert "--overwrite" not in line


def test_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    def no_memory(cfg):
        raise MemoryError

    monkeypatch.setattr(run_module, "load_data", no_memory)
    assert main(["train", "--out", str(tmp_path / "o"), *SMALL]) == 2
    one_error_line(capsys.readouterr().err, "out of memory", "--batch-size")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, hint", [("ENOSPC", "disk is full"), ("EROFS", "read-only"),
                                        ("ENAMETOOLONG", "too long"), ("EACCES", "permission"),
                                        ("EISDIR", "a folder is where a file should be"),
                                        ("EDQUOT", "quota")])
def test_every_disk_errno_says_what_to_do(name, hint):
    import errno
    import os

    from dfbst_np.errors import StorageError, is_disk_error, storage_error
    e = OSError(getattr(errno, name), os.strerror(getattr(errno, name)), "/runs/a/metrics.csv")
    assert is_disk_error(e) and not is_disk_error(OSError(errno.EBADF, "bad fd"))
    err = storage_error(e, "write /runs/a/metrics.csv")
    assert isinstance(err, StorageError) and isinstance(err, OSError)
    assert str(err).startswith("cannot write /runs/a/metrics.csv: ") and hint in str(err)
    assert "\n" not in str(err)


def test_temporary_files_of_every_name_are_removed_under_the_lock(run_dir):
    stale = [run_dir / f"{name}.a1b2c3d4.tmp" for name in ("checkpoint.npz", "config.json",
                                                           "metrics.csv")]
    for p in stale:
        p.write_bytes(b"half")
    mine = run_dir / "config.json.notes.tmp"
    mine.write_text("not ours")
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and mine.read_text() == "not ours"
