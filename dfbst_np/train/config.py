"""Run settings and their per-model defaults (SPEC sections 1 and 4).

DFBST's reference settings: SGD lr 0.1, momentum 0.9, weight decay 1e-4,
alpha 5e-6, beta 0.1, clipping at 1.0, lr x0.1 after epochs 80 and 120,
160 epochs, batch 64, seed 7. ``--method dst`` takes DST's own MNIST
settings instead: lr 0.01, alpha 5e-4, 20 epochs, no weight decay, no
clipping (DST's mnist/train_argument.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Tuple

DATASET_FOR_MODEL = {"lenet300_100": "sample", "lenet_5": "sample",
                     "vgg16": "cifar10", "resnet18": "cifar100"}


@dataclass
class RunConfig:
    """Everything that determines a training run (saved as config.json)."""
    model: str = "lenet300_100"
    method: str = "dfbst"
    dataset: str = "sample"
    epochs: int = 160
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    alpha: float = 5e-6
    beta: float = 0.1
    clip_norm: Optional[float] = 1.0
    milestones: Tuple[int, ...] = (80, 120)
    gamma: float = 0.1
    seed: int = 7
    dtype: str = "float32"
    test_batch_size: int = 100
    train_limit: Optional[int] = None     # use only the first N training images
    test_limit: Optional[int] = None
    kernel_path: Optional[str] = None     # dense, sparse or auto (None: auto)
    weight_grad: str = "exact"            # exact, or predicted (DFBST's accelerated approximation)
    data_root: Optional[str] = None
    download: bool = False
    backend: str = "numpy"                # numpy, or torch (the PyTorch reference step)
    device: str = "cpu"                   # cpu, or cuda (torch backend only)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "RunConfig":
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}")
        if raw.get("milestones") is not None:
            raw["milestones"] = tuple(raw["milestones"])
        return cls(**raw)


def default_config(model: str = "lenet300_100", method: str = "dfbst", **overrides) -> RunConfig:
    """The reference settings for ``model`` and ``method``, then ``overrides``."""
    cfg = RunConfig(model=model, method=method, dataset=DATASET_FOR_MODEL.get(model, "sample"))
    if method == "dst":
        cfg.lr, cfg.alpha, cfg.epochs, cfg.clip_norm, cfg.milestones = 0.01, 5e-4, 20, None, ()
        cfg.weight_decay = 0.0
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg
