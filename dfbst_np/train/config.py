"""Run settings and their per-model defaults (SPEC sections 1 and 4).

The defaults below are DFBST's reference settings: SGD lr 0.1, momentum 0.9,
weight decay 1e-4, alpha 5e-6, beta 0.1, clipping at 1.0, lr x0.1 after
epochs 80 and 120, 160 epochs, batch 64, seed 7. Each method carries its own
reference settings (``dfbst_np.methods.get(name).defaults``), which
:func:`default_config` applies: ``--method dst`` takes DST's own MNIST
settings (lr 0.01, alpha 5e-4, 20 epochs, no weight decay, no clipping).

:meth:`RunConfig.validate` checks every value (a flag's or a config.json
entry's), its bounds included, and that the model takes the dataset's
images, and names the flag or the file in its :class:`ConfigError`.
:meth:`RunConfig.load` requires every setting in config.json: a missing one
is refused, never filled in with a default (only the settings older
versions did not record take the one value every run of those versions had).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

from .. import methods
from ..errors import ConfigError, is_disk_error, storage_error
from ..methods import WEIGHT_GRADS
from ..models import INPUT_SHAPES, NAMES as MODELS, REGISTRY as MODEL_REGISTRY
from ..sparse.kernels import PATHS
from ..atomic import write_atomic
from .data.datasets import canonical_name

DATASET_FOR_MODEL = {name: m.dataset for name, m in MODEL_REGISTRY.items()}
# Bounds of the numeric settings: far above any real run, far below where an int64
# checkpoint entry, a progress bar or a BLAS library would overflow.
MAX_EPOCHS = 1_000_000
MAX_COUNT = 2 ** 31 - 1          # batch sizes, image limits
MAX_SEED = 2 ** 32 - 1           # every generator in use (NumPy's, torch.manual_seed) takes it
MAX_THREADS = 1024
#: RunConfig fields that are options of a method (see RunConfig.method_options).
METHOD_OPTIONS = ("density", "distribution", "zeta", "drop_fraction", "update_interval",
                  "prune_start", "update_end")
# Settings older versions did not record, and the one value every run of theirs had
# (the method options, of gmp, set and rigl: a run from before them had none).
ADDED_LATER = {"textbook": False, "threads": None, "backend": "numpy", "device": "cpu",
               **dict.fromkeys(METHOD_OPTIONS)}


def image_shape(dataset: str) -> Tuple[int, int, int]:
    """(C, H, W) of a dataset's images: CIFAR's 3x32x32, the MNIST family's 1x28x28."""
    return (3, 32, 32) if canonical_name(dataset).startswith("cifar") else (1, 28, 28)


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
    textbook: bool = False                # run the rule through dfbst_np.textbook (slower, same numbers)
    data_root: Optional[str] = None
    download: bool = False
    threads: Optional[int] = None         # BLAS threads the run was trained with (None: unknown)
    backend: str = "numpy"                # numpy, or torch (the PyTorch reference step)
    device: str = "cpu"                   # cpu, or cuda (torch backend only)
    # Options of the methods that have them (gmp, set, rigl; SPEC section 8),
    # None: the method's default. A method refuses an option it does not take.
    density: Optional[float] = None       # overall forward density of the masked weights
    distribution: Optional[str] = None    # erk or uniform: how density is spread over layers
    zeta: Optional[float] = None          # set: fraction dropped and regrown after every epoch
    drop_fraction: Optional[float] = None  # rigl: alpha, the first update's fraction
    update_interval: Optional[int] = None  # gmp, rigl: steps between topology updates
    prune_start: Optional[float] = None   # gmp: fraction of the run where pruning starts
    update_end: Optional[float] = None    # gmp: target reached; rigl: mask fixed from here

    def method_options(self) -> dict:
        """The method options this run sets (the others take the method's defaults)."""
        return {k: getattr(self, k) for k in METHOD_OPTIONS if getattr(self, k) is not None}

    def to_json(self) -> str:
        """config.json's text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path) -> None:
        """Write config.json atomically (a temporary file of its own name, then a rename)."""
        write_atomic(path, self.to_json().encode())

    @classmethod
    def load(cls, path) -> "RunConfig":
        """Read and validate config.json; every error names the file.

        Every setting must be there (except :data:`ADDED_LATER`'s, which
        take the value runs had before they were recorded).
        """
        path = Path(path)
        try:
            if path.stat().st_size > 1_000_000:
                raise ConfigError(f"{path}: {path.stat().st_size} bytes is not a config.json "
                                  f"(a run's settings take about 1 KB)")
            raw = json.loads(path.read_text())
        except OSError as e:
            if is_disk_error(e):
                raise storage_error(e, f"read {path}") from None
            raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
        except ValueError as e:         # not UTF-8, not JSON, or a number of 4300+ digits
            raise ConfigError(f"{path}: not a valid config.json ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a valid config.json (nested too deeply)") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings, "
                              f"got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown settings {unknown}")
        missing = [name for name in (f.name for f in fields(cls))
                   if name not in raw and name not in ADDED_LATER]
        if missing:
            what = (f"setting {missing[0]!r} is" if len(missing) == 1 else
                    f"settings {', '.join(map(repr, missing[:3]))}"
                    + (f" and {len(missing) - 3} more" if len(missing) > 3 else "") + " are")
            raise ConfigError(f"{path}: {what} missing; a resumed run takes every setting from "
                              f"config.json, never a default: put it back as the run was started")
        raw = {**{k: v for k, v in ADDED_LATER.items() if k not in raw}, **raw}
        if isinstance(raw.get("milestones"), list):
            raw["milestones"] = tuple(raw["milestones"])
        cfg = cls(**raw).validate(where=f"{path}: ")
        try:
            canonical_name(cfg.dataset)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg

    def validate(self, where: str = "", names: Optional[Mapping[str, str]] = None) -> "RunConfig":
        """Check every setting; return self.

        Parameters
        ----------
        where : str
            Prefix of every message (the config file, for a loaded config).
        names : dict, optional
            How to call a field in a message (``{"batch_size": "--batch-size"}``
            on the command line); default: the field's own name.

        Raises
        ------
        ConfigError
            Naming the first invalid setting, what it must be and what it is.
        """
        names = names or {}
        for field, (ok, what) in _RULES.items():
            value = getattr(self, field)
            if not ok(value):
                what = what() if callable(what) else what
                raise ConfigError(f"{where}{names.get(field, field)} must be {what}, got {value!r}")
        accepted = methods.get(self.method).weight_grads
        if self.weight_grad not in accepted:
            raise ConfigError(f"{where}{names.get('weight_grad', 'weight_grad')} {self.weight_grad!r} "
                              f"is not available for method {self.method!r} (it accepts "
                              f"{list(accepted)})")
        self._validate_method_options(where, names)
        if self.textbook and self.weight_grad == "predicted":
            raise ConfigError(f"{where}{names.get('textbook', 'textbook')} runs the exact rule; "
                              f"{names.get('weight_grad', 'weight_grad')} 'predicted' has no textbook form")
        try:
            shape = image_shape(self.dataset)
        except ConfigError:
            shape = None                    # an unknown name is refused where the data is loaded
        if shape is not None and shape != INPUT_SHAPES.get(self.model, shape):
            fits = [d for d in ("sample", "fashion_mnist", "mnist", "kmnist", "cifar10", "cifar100")
                    if image_shape(d) == INPUT_SHAPES[self.model]]
            raise ConfigError(f"{where}{names.get('model', 'model')} {self.model} takes "
                              f"{_shape(INPUT_SHAPES[self.model])} images but "
                              f"{names.get('dataset', 'dataset')} {self.dataset} holds "
                              f"{_shape(shape)} ones; use a dataset of {', '.join(fits)}")
        return self

    def _validate_method_options(self, where: str, names: Mapping[str, str]) -> None:
        """Each option set is one the method takes, with a valid value (the method's rules)."""
        given = self.method_options()
        impl = methods.get(self.method).fast
        takes = getattr(impl, "OPTIONS", {})
        for key in given:
            if key not in takes:
                known = ", ".join(names.get(k, k) for k in takes) if takes else "none"
                raise ConfigError(f"{where}{names.get(key, key)} is not an option of method "
                                  f"{self.method!r} (its options: {known})")
        if given:
            try:
                type(impl).check_options(dict(impl.options, **given), names=names)
            except ValueError as e:
                raise ConfigError(f"{where}{e}") from None



def _shape(shape) -> str:
    return "x".join(str(n) for n in shape)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return _int(v) or (isinstance(v, float) and math.isfinite(v))


def _opt(rule: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or rule(v)


def _count(top: int) -> Callable[[object], bool]:
    return lambda v: _int(v) and 1 <= v <= top


_positive_int = _count(MAX_COUNT)
_RULES = {
    "model": (lambda v: v in MODELS, f"one of {list(MODELS)}"),
    "method": (lambda v: v in methods.names(), lambda: f"one of {list(methods.names())}"),
    "dataset": (lambda v: isinstance(v, str), "a dataset name"),
    "epochs": (_count(MAX_EPOCHS), f"an integer from 1 to {MAX_EPOCHS}"),
    "batch_size": (_positive_int, f"an integer from 1 to {MAX_COUNT}"),
    "lr": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "momentum": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "alpha": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "beta": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "clip_norm": (_opt(lambda v: _num(v) and v > 0), "a finite number > 0 or null"),
    "milestones": (lambda v: isinstance(v, tuple) and all(_count(MAX_EPOCHS)(m) for m in v)
                   and list(v) == sorted(set(v)), f"increasing integers from 1 to {MAX_EPOCHS}"),
    "gamma": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "seed": (lambda v: _int(v) and 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}"),
    "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
    "test_batch_size": (_positive_int, f"an integer from 1 to {MAX_COUNT}"),
    "train_limit": (_opt(_positive_int), f"an integer from 1 to {MAX_COUNT} (or null: all images)"),
    "test_limit": (_opt(_positive_int), f"an integer from 1 to {MAX_COUNT} (or null: all images)"),
    "kernel_path": (_opt(lambda v: v in PATHS), f"one of {list(PATHS)} (or absent: auto)"),
    "weight_grad": (lambda v: v in WEIGHT_GRADS, f"one of {list(WEIGHT_GRADS)}"),
    "data_root": (_opt(lambda v: isinstance(v, str)), "a folder name"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "textbook": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (_opt(_count(MAX_THREADS)), f"an integer from 1 to {MAX_THREADS}"),
    "backend": (lambda v: v in ("numpy", "torch"), "'numpy' or 'torch'"),
    "device": (lambda v: v in ("cpu", "cuda"), "'cpu' or 'cuda'"),
}


def default_config(model: str = "lenet300_100", method: str = "dfbst", **overrides) -> RunConfig:
    """The reference settings for ``model`` and ``method``, then ``overrides``."""
    cfg = RunConfig(model=model, method=method, dataset=DATASET_FOR_MODEL.get(model, "sample"))
    if method in methods.names():            # an unknown one is reported by validate
        for key, value in methods.get(method).defaults.items():
            setattr(cfg, key, value)
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg
