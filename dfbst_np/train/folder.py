"""The rules of a run folder: what may start where, and a history that is never lost.

A run folder holds ``config.json`` (the settings), ``checkpoint.npz`` (the
state after the last finished epoch, and the metrics of every epoch so far)
and ``metrics.csv`` (the same metrics, one row per epoch, for people and
plots). The checkpoint is written first and is the truth; metrics.csv is
rewritten from it after every epoch, so a kill between the two loses
nothing.

* A new run starts only in a folder that does not exist or is empty
  (:func:`check_new_folder`); ``--overwrite`` moves an old folder aside
  (:func:`move_aside`), never deletes it.
* Resuming reconciles metrics.csv with the checkpoint's history
  (:func:`resume_history`): a missing or empty file is rebuilt, and a
  file that contradicts the checkpoint, or an old checkpoint without a
  history whose metrics.csv lacks rows, is refused, naming the file.
* One writer at a time: ``train``, ``--resume`` and ``--overwrite`` hold the
  folder's lock (:func:`.lock.lock_folder`) for as long as they run; a second
  writer is refused at once.
* Temporary files a killed writer left behind are removed when the folder
  is next used, under the lock (:func:`remove_stale_files`).
"""
from __future__ import annotations

import csv
import datetime
import io
import math
import os
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import RunFolderError, is_disk_error, storage_error
from ..atomic import remove_stale_temp_files, write_atomic
from .lock import LOCK, FolderLock, lock_folder

__all__ = ["CHECKPOINT", "CONFIG", "LOCK", "METRICS", "FolderLock", "check_new_folder",
           "checkpoint_epoch", "history_arrays", "history_rows", "lock_folder", "move_aside",
           "read_metrics", "remove_stale_files", "resume_history", "resume_hint", "unmovable",
           "write_metrics"]

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.csv", "checkpoint.npz"
START_OVER = ("start elsewhere with --out NEW_FOLDER, or start over with --overwrite (which moves "
              "the old folder aside)")

Row = Dict[str, float]


def check_new_folder(out) -> None:
    """Refuse to start a new run in ``out`` unless it is absent or an empty folder.

    Raises
    ------
    RunFolderError
        Naming the folder, what it holds, and how to continue or start over.
    """
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
        if not out.is_dir() or all(p.name == LOCK for p in out.iterdir()):
            return
        if (out / CONFIG).is_file():
            raise RunFolderError(f"{out} already holds a run ({_progress(out)}); continue it with "
                                 f"--resume {out} (and --epochs N to train further), or {START_OVER}")
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"use {out} as a run folder") from None
        raise
    how = "" if unmovable(out) else ", or pass --overwrite to move the folder aside"
    raise RunFolderError(f"{out} exists and holds files that are not a run; choose another "
                         f"--out{how}")


def _progress(out: Path) -> str:
    epoch = checkpoint_epoch(out)
    return "no epoch finished" if epoch is None else f"{epoch} epoch(s) finished"


def checkpoint_epoch(out) -> Optional[int]:
    """The epoch of ``out``'s checkpoint, or None if there is none (for messages only)."""
    try:
        with np.load(Path(out) / CHECKPOINT, allow_pickle=False) as z:
            return int(z["meta/epoch"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def unmovable(out) -> Optional[str]:
    """Why ``--overwrite`` must never move ``out`` aside (None if it may).

    ``.``, ``..``, ``/``, the current folder and its parents are not run
    folders a command may move: the user's other files are there.
    """
    out = Path(out)
    try:
        real, cwd = Path(os.path.realpath(out)), Path(os.path.realpath(os.getcwd()))
    except OSError:
        return None
    if out.name in ("", ".", "..") or real == real.parent:
        return f"{str(out)!r} names no run folder of its own"
    if real == cwd or real in cwd.parents:
        return f"{out} is the current folder or one of its parents"
    return None


def move_aside(out, lock: Optional["FolderLock"] = None) -> Optional[Path]:
    """Rename ``out`` to ``out.replaced-<UTC time>`` (if it exists); return the new name.

    ``lock``, the folder's lock held by the caller, moves with it.

    Raises
    ------
    RunFolderError
        If ``out`` is ``.``, ``..``, ``/``, the current folder or a parent of it,
        or cannot be renamed (one line naming the folder).
    """
    out = Path(out)
    why = unmovable(out)
    if why:
        raise RunFolderError(f"--overwrite never moves {why}; give the run's own folder with --out")
    if not out.exists():
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    try:
        os.rename(out, target)      # never over an existing folder (replace would empty-merge)
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"move {out} aside to {target.name}") from None
        raise
    if lock is not None:
        lock.moved_to(target)
    return target


def remove_stale_files(out) -> List[Path]:
    """Remove the temporary files of our own naming that a killed run left in ``out``.

    Call it only under the folder's lock (:func:`lock_folder`): another
    writer's temporary files would look the same.
    """
    out = Path(out)
    removed = []
    for name in (CHECKPOINT, CONFIG, METRICS):
        removed += remove_stale_temp_files(out / name)
    for name in (CONFIG + ".tmp", METRICS + ".tmp"):       # older versions' fixed names
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(out / name)
    return removed


def resume_hint(out) -> str:
    """What to do after a run in ``out`` was interrupted."""
    out = Path(out)
    epoch = checkpoint_epoch(out)
    if epoch is not None:
        return (f"{out} holds {epoch} finished epoch(s); continue with: "
                f"python -m dfbst_np train --resume {out}")
    if (out / CONFIG).is_file():
        return (f"no epoch had finished, so {out} holds only its settings; start the run again "
                f"from epoch 1 with: python -m dfbst_np train --resume {out}")
    return "nothing was written; run the same command again"


# -- metrics.csv and the checkpoint's history ------------------------------------------------

def write_metrics(path, rows: List[Row]) -> None:
    """Rewrite metrics.csv from ``rows`` atomically (small: one row per epoch)."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["epoch"])
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue().encode())


def read_metrics(path) -> List[Row]:
    """The rows of a metrics.csv; [] if it is missing, empty or only a header.

    Raises
    ------
    RunFolderError
        Naming the file and line, if a row is not numbers or the epochs
        are not 1, 2, 3... in order.
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise RunFolderError(f"{path} is not a file (a folder?); move it away")
        return []
    rows: List[Row] = []
    line = 1
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and "epoch" not in reader.fieldnames:
                raise ValueError("its header has no epoch column")
            for line, row in enumerate(reader, start=2):
                if None in row or None in row.values() or "epoch" not in row:
                    raise ValueError("wrong number of fields, or no epoch column")
                rows.append({k: int(v) if k == "epoch" else float(v) for k, v in row.items()})
                if rows[-1]["epoch"] != len(rows):
                    raise ValueError(f"epoch {rows[-1]['epoch']} where {len(rows)} was expected")
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"{path}: line {line} is not a metrics row ({e})") from None
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"read {path}") from None
        raise
    return rows


def history_arrays(rows: List[Row]) -> Dict[str, np.ndarray]:
    """The rows as checkpoint entries: ``history/columns`` (str) and ``history/values`` (float64)."""
    columns = list(rows[0]) if rows else ["epoch"]
    values = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)
    return {"history/columns": np.array(columns),
            "history/values": values.reshape(len(rows), len(columns))}


def history_rows(path, ck: Dict[str, np.ndarray], epoch: int) -> Optional[List[Row]]:
    """The checkpoint's history as rows (None for an older checkpoint without one)."""
    if "history/values" not in ck and "history/columns" not in ck:
        return None
    columns, values = ck.get("history/columns"), ck.get("history/values")
    if columns is None or values is None or columns.dtype.kind != "U" or columns.ndim != 1 \
            or values.dtype != np.float64 or values.shape != (epoch, len(columns)) \
            or (epoch and "epoch" not in columns.tolist()):
        raise RunFolderError(f"{path}: entries 'history/columns' and 'history/values' do not hold "
                             f"the metrics of {epoch} epoch(s)")
    rows = [{c: int(v) if c == "epoch" else float(v) for c, v in zip(columns.tolist(), r)}
            for r in values]
    if [r["epoch"] for r in rows] != list(range(1, epoch + 1)):
        raise RunFolderError(f"{path}: entry 'history/values' does not hold epochs 1 to {epoch}")
    return rows


def _same(a: List[Row], b: List[Row]) -> bool:
    def eq(x, y):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    return all(r.keys() == s.keys() and all(eq(r[k], s[k]) for k in r) for r, s in zip(a, b))


def resume_history(out, ck_rows: Optional[List[Row]], epoch: int) -> Tuple[List[Row], Optional[str]]:
    """The rows of epochs 1..epoch to resume with, and a note if metrics.csv is rebuilt.

    Parameters
    ----------
    out : path-like
        The run folder.
    ck_rows : list of dict or None
        The checkpoint's history (None: an older checkpoint without one, or none).
    epoch : int
        The checkpoint's epoch (0 without a checkpoint).

    Raises
    ------
    RunFolderError
        If metrics.csv is unreadable or contradicts the checkpoint, or if
        resuming would drop rows of finished epochs; naming the file and
        what to do.
    """
    out = Path(out)
    path = out / METRICS
    try:
        rows = read_metrics(path)
    except RunFolderError as e:
        if ck_rows is not None:
            raise RunFolderError(f"{e}. {out / CHECKPOINT} holds the whole history: move {path} "
                                 f"aside and resume again to rebuild it from there") from None
        raise RunFolderError(f"{e}. It is the only record of the finished epochs' metrics: "
                             f"repair it, or {START_OVER}") from None
    if ck_rows is not None:
        n = min(len(rows), epoch)
        if not _same(rows[:n], ck_rows[:n]):
            raise RunFolderError(f"{path} differs from the history in {out / CHECKPOINT} (one "
                                 f"was edited, or comes from another run); if the checkpoint is "
                                 f"this run's, move {path} aside and resume again to rebuild it "
                                 f"from there, else put back the run's own checkpoint")
        if len(rows) > epoch:
            raise RunFolderError(
                f"{path} holds epochs 1 to {len(rows)} but {out / CHECKPOINT} only {epoch}: "
                f"resuming would drop or replace the rows of epochs {epoch + 1} to {len(rows)}. "
                f"If the checkpoint was replaced by an older one, put the newer one back; to go "
                f"on from epoch {epoch} anyway, move {path} aside (it is rebuilt from the "
                f"checkpoint)")
        note = None
        if len(rows) < epoch:
            note = (f"note: {path} held {len(rows)} of the {epoch} finished epochs; "
                    f"rebuilt it from the history in {out / CHECKPOINT}")
        return ck_rows, note
    if epoch == 0 and rows:
        raise RunFolderError(f"{path} holds {len(rows)} epoch(s) but {out / CHECKPOINT} is "
                             f"missing, so the run cannot be continued; {START_OVER}")
    if len(rows) < epoch:
        raise RunFolderError(
            f"{path} holds {len(rows)} epoch(s) but {out / CHECKPOINT} is at epoch {epoch}: "
            f"resuming would lose the metrics of epochs {len(rows) + 1} to {epoch}. Restore "
            f"{path}, or {START_OVER}")
    if len(rows) > epoch:
        raise RunFolderError(
            f"{path} holds epochs 1 to {len(rows)} but {out / CHECKPOINT} only {epoch}: "
            f"resuming would drop or replace the rows of epochs {epoch + 1} to {len(rows)}. If "
            f"the checkpoint was replaced by an older one, put the newer one back; to go on "
            f"from epoch {epoch} anyway, keep a copy of {path} and delete its rows after epoch "
            f"{epoch}")
    return rows, None
