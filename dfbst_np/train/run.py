"""A training run: epochs of Trainer steps, metrics.csv, checkpoints, resume.

A run folder holds ``config.json`` (the settings), ``checkpoint.npz``
(written atomically at the end of every epoch, with the metrics of every
epoch so far) and ``metrics.csv`` (one row per epoch); the folder's rules
(never overwrite, never drop history) are in :mod:`.folder`. Resuming
checks the checkpoint entry by entry against the run's config, loads it
and goes on; because every epoch draws its batch order and augmentation
from its own generator ``default_rng([seed, epoch])``, and the backward
mask's V_prev is never used at batch index 0, a resumed run ends with
exactly the numbers of an uninterrupted one (with the same BLAS thread
count: another count sums in another order). The steps run on a backend
(:mod:`.backend`: NumPy, or the PyTorch reference on a CPU or GPU) that
writes the same checkpoint, so a run may be resumed on the other.
"""
from __future__ import annotations

import bisect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import (CheckpointError, ConfigError, RunFolderError, StorageError,
                      TrainingDivergedError, is_disk_error, storage_error)
from ..runtime import STEP_THREADS, keep_freed_memory, pinned_blas_threads
from .checkpoint import (EntryHeader, check_entries, kill_point, load_checkpoint, read_headers,
                         save_checkpoint, strip_prefix, with_prefix)
from .backend import (COST_ENTRIES, build_model, build_trainer, check_backend, mask_densities,
                      trainer_for)
from .config import RunConfig
from .folder import (CHECKPOINT, CONFIG, LOCK, METRICS, FolderLock, check_new_folder,
                     history_arrays, history_rows, lock_folder, read_metrics, remove_stale_files,
                     resume_history, write_metrics)
from .data import cifar_test_transform, cifar_train_transform, iterate_batches, load_dataset

__all__ = ["Data", "Run", "build_model", "build_trainer", "load_data", "mask_densities",
           "read_metrics", "write_metrics", "CHECKPOINT", "CONFIG", "METRICS"]
# What a checkpoint records about the run, checked against config.json on resume.
META_FIELDS = ("model", "method", "dtype", "weight_grad")
# Checkpoint entries that restate a setting of config.json, checked against it on resume.
SETTING_ENTRIES = {"sched/base_lr": "lr", "sched/gamma": "gamma", "sched/milestones": "milestones",
                   "optim/momentum": "momentum", "optim/weight_decay": "weight_decay"}
# Free space a checkpoint needs beyond its arrays (zip and npy headers, history).
SPACE_MARGIN = 256 * 1024


@dataclass
class Data:
    """Train and test arrays, ready for the model (normalised, in its dtype)."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: bool


def load_data(cfg: RunConfig) -> Data:
    """Load both splits of ``cfg.dataset``, apply limits, CIFAR normalisation and dtype."""
    train = load_dataset(cfg.dataset, root=cfg.data_root, train=True, download=cfg.download)
    test = load_dataset(cfg.dataset, root=cfg.data_root, train=False, download=cfg.download)
    is_cifar = train.images.shape[1] == 3
    tx, ty = train.images[:cfg.train_limit], train.labels[:cfg.train_limit]
    vx, vy = test.images[:cfg.test_limit], test.labels[:cfg.test_limit]
    if is_cifar:
        vx = cifar_test_transform(vx)
    dtype = np.dtype(cfg.dtype)
    return Data(tx.astype(dtype), ty, vx.astype(dtype), vy, train.num_classes, augment=is_cifar)


class Run:
    """One training run in a folder; ``Run(cfg, out).train()`` or ``Run.resume(out).train()``.

    A new run refuses a folder that already holds anything (see
    :func:`~dfbst_np.train.folder.check_new_folder`); its config.json is
    written when training starts, after the data and the model are ready.
    """

    def __init__(self, cfg: RunConfig, out, data: Optional[Data] = None) -> None:
        self.cfg, self.out = cfg.validate(), Path(out)
        check_backend(cfg)                # before the data: a missing torch or GPU fails at once
        self.data = data if data is not None else load_data(cfg)
        self.steps_per_epoch = -(-len(self.data.train_y) // cfg.batch_size)
        self.backend = trainer_for(cfg, self.data.num_classes,    # NumPy's Trainer, or torch's
                                   self.steps_per_epoch)
        self.model, self.trainer = self.backend.model, self.backend.trainer
        self.epoch = 0                    # epochs completed
        self.totals = {"exact_flops": 0.0, "ideal_flops": 0.0, "dense_flops": 0.0, "seconds": 0.0}
        self.rows: List[Dict[str, float]] = []
        self.owns_folder = False          # True once resumed, or started in a new folder
        self.note: Optional[str] = None   # what resuming repaired, to tell the user

    # -- persistence -----------------------------------------------------
    def state_arrays(self) -> Dict[str, np.ndarray]:
        """Everything the checkpoint holds, as the flat dict of arrays it is written from."""
        arrays = self.backend.state()     # model/, optim/, sched/, mask/, dmask/
        arrays.update(with_prefix("totals", self.totals))
        arrays["meta/epoch"] = np.array(self.epoch, dtype=np.int64)
        for key in META_FIELDS:
            arrays[f"meta/{key}"] = np.array(getattr(self.cfg, key))
        arrays.update(history_arrays(self.rows))
        return arrays

    def save(self) -> None:
        save_checkpoint(self.out / CHECKPOINT, self.state_arrays())

    @classmethod
    def resume(cls, out, data: Optional[Data] = None, epochs: Optional[int] = None,
               data_root: Optional[str] = None, download: Optional[bool] = None,
               backend: Optional[str] = None, device: Optional[str] = None) -> "Run":
        """Continue the run in ``out``, optionally up to ``epochs`` (at least those done).

        ``data_root`` and ``download`` say where the (checksummed, hence
        identical) data is now; ``backend`` and ``device`` where the steps run
now (default: the run's own; either backend reads the other's checkpoint). Nothing in the folder changes before
        :meth:`train`, and nothing at all if this raises.

        Raises
        ------
        RunFolderError, ConfigError, CheckpointError
            Naming the file (and entry) that does not allow resuming.
        """
        out = Path(out)
        check_resumable(out)
        cfg = RunConfig.load(out / CONFIG)
        ck_path = out / CHECKPOINT
        headers, ck = None, None
        if ck_path.exists():
            # The headers first: nothing is allocated for an entry before its shape is known;
            # then the small entries that say whose checkpoint it is and what it holds.
            headers = read_headers(ck_path)
            ck = load_checkpoint(ck_path, [k for k in headers if k.startswith(("meta/", "history/"))])
            _check_meta(ck_path, ck, cfg)
        epoch = _checkpoint_epoch(ck_path, ck, cfg) if ck is not None else 0
        rows, note = resume_history(out, history_rows(ck_path, ck, epoch) if ck else None, epoch)
        if epochs is not None:
            if epochs < epoch:
                raise ConfigError(f"--epochs {epochs} is below the {epoch} epochs {out} has "
                                  f"already finished; give at least {epoch}")
            cfg.epochs = epochs
            cfg.validate(names={"epochs": "--epochs"})
        cfg.data_root = cfg.data_root if data_root is None else data_root
        cfg.download = cfg.download if download is None else download
        cfg.backend, cfg.device = backend or cfg.backend, device or cfg.device
        run = cls(cfg, out, data)
        if headers is not None:
            run._load_state(ck_path, headers, epoch)
        run.epoch, run.rows, run.note, run.owns_folder = epoch, rows, note, True
        return run

    def _load_state(self, path: Path, headers: Dict[str, EntryHeader], epoch: int) -> None:
        """Check every entry's header against what this run writes, then load and check the
        values (the settings they restate, finiteness), then load them into the backend."""
        # Checked elsewhere: the history by history_rows, the meta strings by _check_meta.
        checked = {"history/columns", "history/values"} | {f"meta/{k}" for k in META_FIELDS}
        template = self.state_arrays()
        want, got = template["sched/milestones"], headers.get("sched/milestones")
        if got is not None and got.shape != want.shape and len(got.shape) == 1 \
                and got.shape[0] <= 1000 and got.dtype.kind in "iu":    # small: read it to say so
            value = load_checkpoint(path, ["sched/milestones"])["sched/milestones"].tolist()
            raise CheckpointError(
                f"{path}: entry 'sched/milestones' is {value} but milestones in config.json is "
                f"{list(self.cfg.milestones)}; the checkpoint does not belong to this run's "
                f"settings: put back the run's own config.json or checkpoint")
        required = {k: v for k, v in template.items() if k not in checked and k not in COST_ENTRIES}
        check_entries(path, {k: v for k, v in headers.items() if k not in checked}, required,
                      {**self.backend.optional_state(), **COST_ENTRIES})
        ck = load_checkpoint(path)
        self._check_settings(path, ck, template, epoch)
        for key, value in ck.items():
            if value.dtype.kind in "fc" and not key.startswith("history/") \
                    and not np.isfinite(value).all():
                raise CheckpointError(
                    f"{path}: entry {key!r} holds NaN or infinite values: the checkpoint is "
                    f"corrupt or was saved by a run that diverged; put back a good copy of it, "
                    f"or start over with --overwrite")
        try:
            self.backend.load_state(ck)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
        self.totals = {k: float(v) for k, v in strip_prefix("totals", ck).items()}

    def _check_settings(self, path: Path, ck: Dict[str, np.ndarray], template, epoch: int) -> None:
        """The schedule and the optimiser's settings in the checkpoint are config.json's."""
        cfg = self.cfg
        for key, setting in SETTING_ENTRIES.items():
            if not np.array_equal(ck[key], template[key]):
                value = getattr(cfg, setting)
                value = list(value) if isinstance(value, tuple) else value
                raise CheckpointError(
                    f"{path}: entry {key!r} is {ck[key].tolist()!r} but {setting} in config.json "
                    f"is {value!r}; the checkpoint does not belong to this run's settings: put "
                    f"back the run's own config.json or checkpoint")
        for key in ("optim/dampening", "optim/nesterov"):
            if key in template and not np.array_equal(ck[key], template[key]):
                raise CheckpointError(f"{path}: entry {key!r} is {ck[key].tolist()!r}, but this "
                                      f"run's SGD has {template[key].tolist()!r}")
        if int(ck["sched/last_epoch"]) != epoch:
            raise CheckpointError(f"{path}: entry 'sched/last_epoch' is "
                                  f"{int(ck['sched/last_epoch'])} but 'meta/epoch' is {epoch}")
        lr = cfg.lr * cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)
        for key in ("sched/last_lr", "optim/lr"):
            if not np.isclose(float(ck[key]), lr, rtol=1e-9, atol=0):
                raise CheckpointError(
                    f"{path}: entry {key!r} is {float(ck[key])!r} but config.json's schedule "
                    f"(lr {cfg.lr!r}, x{cfg.gamma!r} after epochs {list(cfg.milestones)}) gives "
                    f"{lr!r} after epoch {epoch}")

    def _prepare_folder(self) -> FolderLock:
        """Take the folder's lock and return it. A new run: refuse a used folder, check the
        free space, then write config.json. A resumed one: remove stale temporary files,
        check the free space, save a changed config, restore metrics.csv."""
        if not self.owns_folder:
            check_new_folder(self.out)
            if self.cfg.threads is None:      # what the trainer's steps use (runtime.step_threads)
                self.cfg.threads = pinned_blas_threads() or STEP_THREADS
            self._check_space()
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                if is_disk_error(e) or isinstance(e, FileExistsError):
                    raise storage_error(e, f"make the run folder {self.out}") from None
                raise
            lock = lock_folder(self.out, "train")
            try:
                check_new_folder(self.out)    # another new run may have started there meanwhile
                self.cfg.save(self.out / CONFIG)
            except BaseException:
                lock.release()
                raise
            self.owns_folder = True
            return lock
        lock = lock_folder(self.out, "train --resume")
        try:
            remove_stale_files(self.out)
            self._check_space()
            if RunConfig.load(self.out / CONFIG) != self.cfg:
                self.cfg.save(self.out / CONFIG)
            if self.rows:
                write_metrics(self.out / METRICS, self.rows)
        except BaseException:
            lock.release()
            raise
        return lock

    def _check_space(self) -> None:
        """Refuse to start (before writing anything) where a checkpoint would not fit."""
        arrays = self.state_arrays()
        later = {k: v for k, v in self.backend.optional_state().items() if k not in arrays}
        need = sum(v.nbytes for v in (*arrays.values(), *later.values())) + SPACE_MARGIN
        folder = self.out
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return                              # unknown: the writes say what goes wrong
        if self.owns_folder and (self.out / CHECKPOINT).is_file():
            free += (self.out / CHECKPOINT).stat().st_size  # replaced, hence freed, by the next
            need += (self.out / CHECKPOINT).stat().st_size  # but both exist during the rename
        if free < need:
            raise StorageError(f"{folder} has {free // 1024} KiB free, but a checkpoint of this "
                               f"run takes about {need // 1024} KiB; free some space, or use a "
                               f"folder on another disk (nothing was written)")

    # -- training --------------------------------------------------------
    def train(self, progress: bool = True, log: Callable[[str], None] = print) -> List[Dict[str, float]]:
        """Train up to ``cfg.epochs``; after every epoch write the checkpoint, then metrics.csv.

        The checkpoint also records the kernel costs the "auto" path chose by
        (``costs/``); a resumed run uses those, not this machine's cache, which
        may have been measured again since.

        The folder's lock is held from before anything is written until this returns.
        """
        keep_freed_memory()     # the run owns its process: steps reuse their pages
        lock = self._prepare_folder()           # held until the run ends: one writer at a time
        try:
            with self.backend.kernel_costs():   # resumed: the kernel choices it made before
                return self._train(progress, log)
        finally:
            lock.release()

    def _train(self, progress: bool, log: Callable[[str], None]) -> List[Dict[str, float]]:
        from tqdm import tqdm

        cfg = self.cfg
        if self.note:
            log(self.note)
            self.note = None
        bar = tqdm(total=(cfg.epochs - self.epoch) * self.steps_per_epoch, disable=not progress,
                   unit="step", dynamic_ncols=True, leave=False)
        try:
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                row = self._train_epoch(epoch, bar)
                self.rows.append(row)
                self.epoch = epoch
                self.save()                          # the truth, history included
                kill_point("checkpoint-saved")
                write_metrics(self.out / METRICS, self.rows)
                log(epoch_line(epoch, row))
        finally:
            bar.close()
        return self.rows

    def _train_epoch(self, epoch: int, bar) -> Dict[str, float]:
        cfg, d, tr = self.cfg, self.data, self.backend
        rng = np.random.default_rng([cfg.seed, epoch])
        sums = {"loss": 0.0, "ce": 0.0, "alpha_term": 0.0, "beta_term": 0.0, "train_acc": 0.0}
        n, V, start = 0, float("nan"), time.perf_counter()
        for index, (x, y) in enumerate(iterate_batches(d.train_x, d.train_y, cfg.batch_size, rng)):
            kill_point("step")
            if d.augment:
                x = cifar_train_transform(x, rng)
            try:
                # Overflow shows up as inf or NaN, which the layers and the trainer
                # name below; numpy's warnings would only add noise before that message.
                with np.errstate(over="ignore", invalid="ignore"):
                    st = tr.step(x, y, epoch=epoch, index=index)
                if not np.isfinite(st.loss):
                    raise FloatingPointError(f"the loss is {st.loss}")
            except FloatingPointError as e:
                raise self._diverged(epoch, f"step {index + 1}", e) from e
            for key in ("loss", "ce", "alpha_term", "beta_term"):
                sums[key] += getattr(st, key) * len(y)
            sums["train_acc"] += st.accuracy * len(y)
            n += len(y)
            V = st.V if st.V is not None else V
            for key in ("exact_flops", "ideal_flops", "dense_flops"):
                self.totals[key] += getattr(st.cost, key)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{st.loss:.3f}", acc=f"{st.accuracy:.2f}", refresh=False)
        tr.end_epoch()
        try:
            test_acc, test_loss = tr.evaluate(d.test_x, d.test_y, cfg.test_batch_size)
        except FloatingPointError as e:
            raise self._diverged(epoch, "the test pass", e) from e
        self.totals["seconds"] += time.perf_counter() - start
        dense = self.totals["dense_flops"] or 1.0
        row = {"epoch": epoch, "lr": tr.lr, **{k: v / n for k, v in sums.items()},
               "test_acc": test_acc, "test_loss": test_loss, "V": V,
               "flops_exact": self.totals["exact_flops"] / dense,
               "flops_ideal": self.totals["ideal_flops"] / dense,
               "seconds": self.totals["seconds"]}
        # Densities after evaluation: the masks of the weights the checkpoint holds.
        row.update(tr.densities())
        return row


    def _diverged(self, epoch: int, where: str, e: Exception) -> TrainingDivergedError:
        done = (f"{self.out} keeps the checkpoint of epoch {self.epoch}" if self.epoch
                else "no epoch had finished")
        return TrainingDivergedError(
            f"training diverged in epoch {epoch}, {where}: {e}. {done}; start again with a "
            f"smaller learning rate (--lr; this run's is {self.cfg.lr:g}) in a new --out, or "
            f"with --overwrite")


def epoch_line(epoch: int, row: Dict[str, float]) -> str:
    """One epoch's numbers, each labelled: accuracies, densities of M and D, FLOPs so far / dense."""
    return (f"epoch {epoch:3d}  loss {row['loss']:.4f}, accuracy train {row['train_acc']:.4f} "
            f"test {row['test_acc']:.4f}, density M {row['density']:.3f} D {row['bdensity']:.3f}, "
            f"FLOPs/dense exact {row['flops_exact']:.3f} ideal {row['flops_ideal']:.3f}")


def check_resumable(out: Path) -> None:
    """Refuse, saying what is there and what to do, a folder that holds no config.json."""
    try:
        if (out / CONFIG).is_file():
            return
        if not out.exists():
            raise RunFolderError(f"{out} does not exist; start a new run there with --out {out}")
        if not out.is_dir():
            raise RunFolderError(f"{out} is not a folder; --resume takes a run folder")
        if (out / CONFIG).exists():
            raise RunFolderError(f"{out / CONFIG} is not a file (a folder?); move it away")
        names = sorted(p.name for p in out.iterdir() if p.name != LOCK)
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"read the run folder {out}") from None
        raise
    if not names:
        raise RunFolderError(f"{out} is empty: no run to resume; start a new run there with "
                             f"--out {out}")
    found = [n for n in (CHECKPOINT, METRICS) if n in names]
    if found:
        raise RunFolderError(f"{out} holds {' and '.join(found)} but no {CONFIG}, so the run's "
                             f"settings are unknown; put its {CONFIG} back to resume it, or "
                             f"start a new run in another folder with --out NEW_FOLDER")
    raise RunFolderError(f"{out} is not a run folder (no {CONFIG}); start a new run in another "
                         f"folder with --out NEW_FOLDER")


def _check_meta(path: Path, ck: Dict[str, np.ndarray], cfg: RunConfig) -> None:
    """The checkpoint's model, method, dtype and weight gradient are config.json's."""
    for key in META_FIELDS:
        value = ck.get(f"meta/{key}")
        if value is not None and str(value) != str(getattr(cfg, key)):
            raise CheckpointError(
                f"{path}: entry 'meta/{key}' is {str(value)!r} but config.json says "
                f"{getattr(cfg, key)!r}: the checkpoint belongs to another run; put back this "
                f"run's checkpoint, or start over with --overwrite")


def _checkpoint_epoch(path: Path, ck: Dict[str, np.ndarray], cfg: RunConfig) -> int:
    """``meta/epoch``: a 0-d integer in 1..cfg.epochs (the epochs the checkpoint holds)."""
    e = ck.get("meta/epoch")
    if e is None or e.shape != () or e.dtype.kind not in "iu" or not 1 <= int(e) <= cfg.epochs:
        got = "missing" if e is None else f"{e.dtype} {e.shape} {e.tolist()!r}"
        raise CheckpointError(f"{path}: entry 'meta/epoch' must be an integer from 1 to the run's "
                              f"{cfg.epochs} epochs, got {got}")
    return int(e)
