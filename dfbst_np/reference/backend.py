"""The torch backend of the run loop: the reference step on a CPU or a GPU.

:class:`TorchBackend` gives the run loop (:mod:`dfbst_np.train.run`) the
interface of :class:`dfbst_np.train.backend.NumpyBackend`, with the
PyTorch model of :mod:`.models` trained by :class:`.trainer.ReferenceTrainer`:

* it starts from the NumPy model's initial weights (drawn from
  ``default_rng(seed)``), so a seed means the same run on either backend;
* its masks keep the weights' dtype (``float32_masks=False``, as the NumPy
  models build them), so in float64 the two backends agree to rounding;
* each batch, prepared by the run loop as NumPy arrays, goes to the device
  in one copy (``torch.from_numpy(...).to(device, non_blocking=True)``),
  the test set once per run;
* :meth:`step` reports the NumPy :class:`~dfbst_np.train.trainer.StepStats`:
  accuracy from the logits, densities and the FLOPs of the cost ledger
  (:mod:`dfbst_np.sparse.ledger`) from M, D and each layer's N, read from
  the device in one transfer per step;
* :meth:`state` and :meth:`load_state` speak the NumPy checkpoint's keys
  and arrays (``model/``, ``optim/momentum_buffer.<param>``, ``sched/``,
  ``mask/``, ``dmask/``), converted by :mod:`.convert`.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import methods
from ..sparse.ledger import LayerCost, total_cost
from ..train.backend import Backend, BackendUnavailable, overall_densities
from ..train.checkpoint import strip_prefix, with_prefix
from ..train.trainer import StepStats
from .convert import to_numpy_state_dict, to_torch_state_dict
from .layers import METHODS, masked_layers
from .models import build
from .trainer import ReferenceTrainer

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# SGD's hyperparameters in the NumPy optimiser's state dict, with their types
SGD_HYPER = {"lr": float, "momentum": float, "dampening": float, "weight_decay": float,
             "nesterov": bool}
MOMENTUM = "momentum_buffer"


def check_device(device: str) -> None:
    """Fail with one line when PyTorch cannot use ``device`` here."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda: PyTorch sees no CUDA GPU on this machine "
                                 "(torch.cuda.is_available() is False); use --device cpu")


def check_method(method: str, consequence: str = "--backend torch cannot run it; use --backend numpy") -> None:
    """Fail with one line when the reference has no PyTorch twin of ``method``."""
    if method not in METHODS:
        raise BackendUnavailable(f"--method {method} has no PyTorch twin in dfbst_np.reference "
                                 f"(it has {', '.join(METHODS)}): {consequence}")


def set_threads(n: int) -> int:
    """torch's intra-op CPU threads (process-wide: for the CLI and scripts only)."""
    torch.set_num_threads(int(n))
    return torch.get_num_threads()


class TorchBackend(Backend):
    """The reference model and training step of ``cfg`` on ``cfg.device``.

    Parameters
    ----------
    cfg : RunConfig
        model, method, dtype, device and the optimiser's settings.
    initial : dfbst_np model
        The NumPy model whose (initial) state the torch model copies.
    num_classes : int
    """

    name = "torch"

    def __init__(self, cfg, initial, num_classes: int) -> None:
        self.device = torch.device(cfg.device)
        self.method = cfg.method
        # The NumPy backend's kernel costs, if the checkpoint had them: torch chooses no
        # kernels, but a run switched back to NumPy finds them as they were.
        self._numpy_costs: Dict[str, np.ndarray] = {}
        # build() initialises from torch's global generator; the weights are
        # replaced below, and the caller's generator is left as it was.
        with torch.random.fork_rng(devices=[]):
            model = build(cfg.model, method=cfg.method, num_classes=num_classes,
                          dtype=DTYPES[cfg.dtype], float32_masks=False)
        model.load_state_dict(to_torch_state_dict(initial.state_dict(), like=model))
        self.model = model.to(self.device)
        self.trainer = ReferenceTrainer(self.model, lr=cfg.lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay, alpha=cfg.alpha,
                                        beta=cfg.beta, clip_norm=cfg.clip_norm,
                                        milestones=cfg.milestones, gamma=cfg.gamma)
        self.layers: List[Tuple[str, torch.nn.Module]] = list(masked_layers(self.model))
        # N of each layer's products (batch, times output positions for a conv)
        # and the logits, from the shapes of the last forward: no device sync.
        self.rows: Dict[str, int] = {}
        for name, layer in self.layers:
            layer.register_forward_hook(self._rows_hook(name))
        self.logits = None
        self.model.register_forward_hook(self._logits_hook)
        self.test = None          # (images array, its device copy, labels' device copy)

    def _rows_hook(self, name: str):
        def hook(module, inputs, out):
            self.rows[name] = out.numel() // out.shape[1]
        return hook

    def _logits_hook(self, module, inputs, out) -> None:
        self.logits = out

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        """One copy of an array to the device."""
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    # -- the run loop's interface -------------------------------------------
    def step(self, x: np.ndarray, y: np.ndarray, epoch: int, index: int) -> StepStats:
        """One reference training step on the batch (x, y); epoch counts from 1."""
        yt = self.to_device(y)
        s = self.trainer.step(self.to_device(x), yt, epoch=epoch, index=index)
        nnz_m, nnz_d, correct = self._counts(yt)
        costs, density, bdensity = [], {}, {}
        for name, layer in self.layers:
            numel = layer.weight.numel()
            m, d = nnz_m.get(name, numel), nnz_d.get(name, numel)
            density[name] = m / numel
            bdensity[name] = d / numel if name in nnz_d else 1.0
            costs.append(LayerCost(name=name, n=self.rows[name], numel=numel, nnz_m=m, nnz_d=d))
        return StepStats(loss=s["loss"], ce=s["ce"], alpha_term=s["alpha_term"],
                         beta_term=s["beta_term"], V=s["V"] if methods.get(self.method).learns_backward_mask else None,
                         grad_norm=s["grad_norm"], accuracy=correct / len(y),
                         density=density, bdensity=bdensity, cost=total_cost(costs))

    def _counts(self, yt: torch.Tensor):
        """nnz(M), nnz(D) per layer and the correct predictions, in one transfer."""
        counts, keys = [], []
        for name, layer in self.layers:
            for kind, mask in (("m", layer.mask), ("d", layer.dmask)):
                if mask is not None:
                    counts.append(torch.count_nonzero(mask))
                    keys.append((kind, name))
        counts.append((self.logits.argmax(dim=1) == yt).sum())
        values = torch.stack(counts).tolist()
        nnz = {"m": {}, "d": {}}
        for (kind, name), v in zip(keys, values):
            nnz[kind][name] = int(v)
        return nnz["m"], nnz["d"], int(values[-1])

    def evaluate(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        """Accuracy and mean cross-entropy over the images, as the NumPy evaluate."""
        if self.test is None or self.test[0] is not images:
            self.test = (images, self.to_device(images), self.to_device(labels))
        _, x, y = self.test
        model = self.model
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                logits = model(x[start:start + batch_size])
                yb = y[start:start + batch_size]
                loss_sum += F.cross_entropy(logits, yb).double() * len(yb)
                correct += (logits.argmax(dim=1) == yb).sum()
        model.train()
        return int(correct) / len(images), float(loss_sum) / len(images)

    def densities(self) -> Dict[str, float]:
        per_layer = {}
        for name, layer in self.layers:
            numel = layer.weight.numel()
            f = 1.0 if layer.mask is None else int(torch.count_nonzero(layer.mask)) / numel
            b = 1.0 if layer.dmask is None else int(torch.count_nonzero(layer.dmask)) / numel
            per_layer[name] = (numel, f, b)
        return overall_densities(per_layer)

    # -- checkpoints in the NumPy format ------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """The NumPy checkpoint's arrays: model, SGD, MultiStepLR, masks."""
        arrays = with_prefix("model", to_numpy_state_dict(self.model))
        optimizer, scheduler = self.trainer.optimizer, self.trainer.scheduler
        group = optimizer.param_groups[0]
        optim = {key: np.array(kind(group[key])) for key, kind in SGD_HYPER.items()}
        for name, p in self.model.named_parameters():
            buf = optimizer.state.get(p, {}).get(MOMENTUM)
            if buf is not None:
                optim[f"{MOMENTUM}.{name}"] = buf.detach().cpu().numpy().copy()
        arrays.update(with_prefix("optim", optim))
        sd = scheduler.state_dict()
        arrays.update(with_prefix("sched", {
            "last_epoch": np.array(sd["last_epoch"], dtype=np.int64),
            "base_lr": np.array(float(sd["base_lrs"][0])),
            "last_lr": np.array(float(sd["_last_lr"][0])),
            "gamma": np.array(float(sd["gamma"])),
            "milestones": np.array(sorted(sd["milestones"].elements()), dtype=np.int64)}))
        for name, layer in self.layers:
            for kind, mask in (("mask", layer.mask), ("dmask", layer.dmask)):
                if mask is not None:
                    arrays[f"{kind}/{name}"] = (mask != 0).cpu().numpy()
        arrays.update(self._numpy_costs)
        return arrays

    def optional_state(self) -> Dict[str, np.ndarray]:
        optional = {}
        for name, p in self.model.named_parameters():
            optional[f"optim/{MOMENTUM}.{name}"] = np.zeros(tuple(p.shape), dtype=DTYPE_NAMES[p.dtype])
        for name, layer in self.layers:
            optional[f"mask/{name}"] = optional[f"dmask/{name}"] = np.zeros(tuple(layer.weight.shape), bool)
        return optional

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        """Load a checkpoint written by either backend (KeyError / ValueError on a mismatch)."""
        self.model.load_state_dict(to_torch_state_dict(strip_prefix("model", arrays), like=self.model))
        self._load_optimizer(strip_prefix("optim", arrays))
        self._load_scheduler(strip_prefix("sched", arrays))
        self._numpy_costs = with_prefix("costs", {k: v.copy()
                                                  for k, v in strip_prefix("costs", arrays).items()})

    def _load_optimizer(self, optim: Dict[str, np.ndarray]) -> None:
        params = dict(self.model.named_parameters())
        index = {name: i for i, name in enumerate(params)}   # the optimiser's parameter order
        missing = sorted(set(SGD_HYPER) - set(optim))
        unknown = sorted(k for k in optim if k not in SGD_HYPER
                         and not (k.startswith(MOMENTUM + ".") and k[len(MOMENTUM) + 1:] in params))
        if missing or unknown:
            raise KeyError(f"optimiser state does not match the model; missing {missing}, "
                           f"unknown {unknown}")
        sd = self.trainer.optimizer.state_dict()
        group = sd["param_groups"][0]
        for key, kind in SGD_HYPER.items():
            group[key] = kind(np.asarray(optim[key]).item())
        state = {}
        for key, value in optim.items():
            if key in SGD_HYPER:
                continue
            name = key[len(MOMENTUM) + 1:]
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(f"'{key}' has shape {value.shape}, the parameter "
                                 f"{tuple(params[name].shape)}")
            state[index[name]] = {MOMENTUM: torch.from_numpy(np.array(value))}
        sd["state"] = state
        self.trainer.optimizer.load_state_dict(sd)     # casts to the parameters' dtype and device

    def _load_scheduler(self, sched: Dict[str, np.ndarray]) -> None:
        scheduler = self.trainer.scheduler
        sd = scheduler.state_dict()
        base_lr = float(sched["base_lr"])
        sd.update(last_epoch=int(sched["last_epoch"]), base_lrs=[base_lr],
                  _last_lr=[float(sched["last_lr"])], gamma=float(sched["gamma"]),
                  milestones=Counter(int(m) for m in np.asarray(sched["milestones"]).reshape(-1)))
        scheduler.load_state_dict(sd)
        self.trainer.optimizer.param_groups[0]["initial_lr"] = base_lr


def make_backend(cfg, initial, num_classes: int) -> TorchBackend:
    """The run loop's torch backend (what :func:`dfbst_np.train.backend.trainer_for` calls)."""
    return TorchBackend(cfg, initial, num_classes)
