"""A training run: epochs of Trainer steps, metrics.csv, checkpoints, resume.

A run folder holds ``config.json`` (the settings), ``metrics.csv`` (one row
per epoch) and ``checkpoint.npz`` (written atomically at the end of every
epoch). Resuming loads the checkpoint, keeps the metrics rows up to its
epoch and goes on; because every epoch draws its batch order and
augmentation from its own generator ``default_rng([seed, epoch])``, and
the backward mask's V_prev is never used at batch index 0, a resumed run
ends with exactly the numbers of an uninterrupted one. The steps run on a
backend (:mod:`.backend`: NumPy, or the PyTorch reference on a CPU or GPU)
that writes the same checkpoint, so a run may be resumed on the other.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..runtime import keep_freed_memory
from .backend import build_model, build_trainer, check_backend, mask_densities, trainer_for  # noqa: F401
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, strip_prefix, with_prefix
from .config import RunConfig
from .data import cifar_test_transform, cifar_train_transform, iterate_batches, load_dataset

CHECKPOINT = "checkpoint.npz"


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
    """One training run in a folder; ``Run(cfg, out).train()`` or ``Run.resume(out).train()``."""

    def __init__(self, cfg: RunConfig, out, data: Optional[Data] = None) -> None:
        self.cfg, self.out = cfg, Path(out)
        check_backend(cfg)                # before the data: a missing torch or GPU fails at once
        self.data = data if data is not None else load_data(cfg)
        self.backend = trainer_for(cfg, self.data.num_classes)    # NumPy's Trainer, or torch's
        self.model, self.trainer = self.backend.model, self.backend.trainer
        self.epoch = 0                    # epochs completed
        self.totals = {"exact_flops": 0.0, "ideal_flops": 0.0, "dense_flops": 0.0, "seconds": 0.0}
        self.rows: List[Dict[str, float]] = []

    # -- persistence -----------------------------------------------------
    def save(self) -> None:
        arrays = self.backend.state()
        arrays.update(with_prefix("totals", self.totals))
        arrays["meta/epoch"] = np.array(self.epoch)
        save_checkpoint(self.out / CHECKPOINT, arrays)

    @classmethod
    def resume(cls, out, data: Optional[Data] = None, backend: Optional[str] = None,
               device: Optional[str] = None) -> "Run":
        """Continue the run in ``out``, on its own backend and device or on those given."""
        out = Path(out)
        if not (out / "config.json").is_file():
            raise FileNotFoundError(f"{out} is not a run folder (no config.json)")
        cfg = RunConfig.load(out / "config.json")
        cfg.backend, cfg.device = backend or cfg.backend, device or cfg.device
        run = cls(cfg, out, data)
        ck = load_checkpoint(out / CHECKPOINT)
        try:
            run.backend.load_state(ck)
            run.totals = {k: float(v) for k, v in strip_prefix("totals", ck).items()}
            run.epoch = int(ck["meta/epoch"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{out / CHECKPOINT} does not match the run's config: {e}") from None
        run.rows = read_metrics(out / "metrics.csv")[:run.epoch]
        return run

    # -- training --------------------------------------------------------
    def train(self, progress: bool = True, log: Callable[[str], None] = print) -> List[Dict[str, float]]:
        """Train up to ``cfg.epochs``, writing metrics and a checkpoint after every epoch."""
        from tqdm import tqdm

        keep_freed_memory()     # the run owns its process: steps reuse their pages
        cfg, d = self.cfg, self.data
        self.out.mkdir(parents=True, exist_ok=True)
        cfg.save(self.out / "config.json")
        steps_per_epoch = -(-len(d.train_y) // cfg.batch_size)
        bar = tqdm(total=(cfg.epochs - self.epoch) * steps_per_epoch, disable=not progress,
                   unit="step", dynamic_ncols=True, leave=False)
        try:
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                row = self._train_epoch(epoch, bar)
                self.rows.append(row)
                write_metrics(self.out / "metrics.csv", self.rows)
                self.epoch = epoch
                self.save()
                log(f"epoch {epoch:3d}  loss {row['loss']:.4f}  train {row['train_acc']:.4f}  "
                    f"test {row['test_acc']:.4f}  density {row['density']:.3f}/{row['bdensity']:.3f}  "
                    f"flops {row['flops_exact']:.3f}/{row['flops_ideal']:.3f}")
        finally:
            bar.close()
        return self.rows

    def _train_epoch(self, epoch: int, bar) -> Dict[str, float]:
        cfg, d, tr = self.cfg, self.data, self.backend
        rng = np.random.default_rng([cfg.seed, epoch])
        sums = {"loss": 0.0, "ce": 0.0, "alpha_term": 0.0, "beta_term": 0.0, "train_acc": 0.0}
        n, V, start = 0, float("nan"), time.perf_counter()
        for index, (x, y) in enumerate(iterate_batches(d.train_x, d.train_y, cfg.batch_size, rng)):
            if d.augment:
                x = cifar_train_transform(x, rng)
            st = tr.step(x, y, epoch=epoch, index=index)
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
        test_acc, test_loss = tr.evaluate(d.test_x, d.test_y, cfg.test_batch_size)
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


def write_metrics(path, rows: List[Dict[str, float]]) -> None:
    """Rewrite metrics.csv from ``rows`` (small: one row per epoch)."""
    tmp = Path(path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def read_metrics(path) -> List[Dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]
