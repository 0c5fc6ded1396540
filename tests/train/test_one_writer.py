"""One writer per run folder (issue 22): train, --resume and --overwrite hold the folder's lock.

The first writer is a subprocess that SIGSTOPs itself at a known point while it
holds the lock (``DFBST_STOP_AT``), so the second command meets a known state
without any timing; the first is then continued and must finish as if alone.
"""
import os

import pytest

from dfbst_np.errors import FolderInUseError
from dfbst_np.train.folder import LOCK, lock_folder
from dfbst_np.train.run import read_metrics

from .folder_checks import SMALL, cli, finish, one_error_line, sha256_listing, start_stopped


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    r = cli("train", "--epochs", "1", "--out", out, *SMALL)
    assert r.returncode == 0, r.stderr
    return out


def test_resume_and_overwrite_while_a_train_runs_are_refused(tmp_path):
    out = tmp_path / "run"
    # Stopped inside its first checkpoint write: its temporary file exists.
    first = start_stopped("train", "--epochs", "2", "--out", out, *SMALL,
                          stop_at="checkpoint-opened:1")
    try:
        before = sha256_listing(out)
        assert LOCK in before and any(k.startswith("checkpoint.npz.") for k in before)
        for args, doing in ((["--resume", out], "--resume"),
                            (["--out", out, "--overwrite", *SMALL], "--overwrite"),
                            (["--out", out, *SMALL], None)):
            r = cli("train", *args, "--no-progress")
            assert r.returncode == 2, r.stderr
            if doing:   # the lock names the holder; a new run is refused by config.json already
                one_error_line(r.stderr, out, "in use by another dfbst_np process",
                               f"pid {first.pid}, train")
            else:
                one_error_line(r.stderr, out, "already holds a run")
            assert sha256_listing(out) == before        # its temporary file included
        assert not [p for p in tmp_path.iterdir() if ".replaced-" in p.name]
    finally:
        code, _, err = finish(first)
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(out / "metrics.csv")] == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "config.json", "metrics.csv"]


def test_two_resumes_one_is_refused(run_dir):
    first = start_stopped("train", "--resume", run_dir, "--epochs", "3", "--no-progress",
                          stop_at="checkpoint-saved:1")
    try:
        before = sha256_listing(run_dir)
        r = cli("train", "--resume", run_dir, "--epochs", "3", "--no-progress")
        assert r.returncode == 2
        one_error_line(r.stderr, run_dir, "in use", f"pid {first.pid}, train --resume",
                       "wait for it")
        assert sha256_listing(run_dir) == before
    finally:
        code, _, err = finish(first)
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3]
    r = cli("train", "--resume", run_dir, "--no-progress")      # the lock is free again
    assert r.returncode == 0 and "resuming at epoch 3 of 3" in r.stdout, r.stderr


def test_an_overwrite_holds_the_old_folder_until_it_is_moved(run_dir, tmp_path):
    # A new run over the folder, stopped at its first step: the old folder is moved aside and
    # the new run holds the new folder's lock; a resume of it is refused.
    first = start_stopped("train", "--out", run_dir, "--overwrite", "--epochs", "1", *SMALL,
                          stop_at="step:1")
    try:
        moved = [p for p in tmp_path.iterdir() if ".replaced-" in p.name]
        assert len(moved) == 1 and not (moved[0] / LOCK).exists()
        before = sha256_listing(run_dir)
        r = cli("train", "--resume", run_dir, "--no-progress")
        assert r.returncode == 2
        one_error_line(r.stderr, "in use", "train")
        assert sha256_listing(run_dir) == before
    finally:
        code, _, err = finish(first)
    assert code == 0, err


def test_a_killed_writers_lock_file_does_not_block(run_dir):
    (run_dir / LOCK).write_text("12345, train\n")       # left by a kill -9: no flock on it
    r = cli("train", "--resume", run_dir, "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not (run_dir / LOCK).exists()


def test_the_lock_nests_in_one_process_and_excludes_others(tmp_path):
    with lock_folder(tmp_path, "a") as outer:
        with lock_folder(tmp_path, "b") as inner:
            assert inner is outer
        assert (tmp_path / LOCK).exists()           # still held by the outer one
        code = ("import sys; from dfbst_np.train.folder import lock_folder\n"
                "try:\n    lock_folder(sys.argv[1], 'x')\nexcept Exception as e:\n"
                "    print(type(e).__name__, e); sys.exit(3)\n")
        import subprocess
        import sys
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 3 and r.stdout.startswith(FolderInUseError.__name__), r.stdout
        assert f"pid {os.getpid()}, a" in r.stdout
    assert not (tmp_path / LOCK).exists()
