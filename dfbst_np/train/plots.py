"""PNG plots of a run folder's metrics.csv (accuracy, densities, FLOPs), and
the figure conventions the notebooks share: signed maps with symmetric colour
limits and a colorbar, log axes with plain tick labels, titles that name the
model, the method and the data."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import List, Optional

from .. import methods
from ..errors import RunFolderError
from ..models import REGISTRY as MODEL_REGISTRY
from ..atomic import write_atomic
from .folder import read_metrics

#: Resolution of every saved or inline figure.
DPI = 110


def run_title(model: str, method: str, dataset: str) -> str:
    """'LeNet-300-100, DFBST, Fashion-MNIST sample': what a figure's title names."""
    data = {"sample": "Fashion-MNIST sample", "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST",
            "kmnist": "KMNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
    model = MODEL_REGISTRY[model].title if model in MODEL_REGISTRY else model
    method = methods.get(method).title if method in methods.names() else method
    return f"{model}, {method}, {data.get(dataset, dataset)}"


def readable_log_axis(ax, which: str = "y") -> None:
    """Plain tick labels ('0.5', '2', '1e-05') on a log axis instead of '6x10^0';
    minor ticks are labelled only when the axis spans less than two decades
    (at 2, 3 and 5 times a power of 10, or all of them below half a decade)."""
    import matplotlib.ticker as ticker

    class _Plain(ticker.Formatter):
        def __init__(self, minor: bool):
            self.minor = minor

        def __call__(self, x, pos=None):
            if self.minor:
                lo, hi = sorted(abs(v) for v in self.axis.get_view_interval())
                if lo <= 0 or hi / lo > 100:
                    return ""
                mantissa = round(x / 10 ** math.floor(math.log10(x)), 6)
                if hi / lo > 3 and mantissa not in (2, 3, 5):     # 2, 3, 5 only: no crowding
                    return ""
            return f"{x:g}"

    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(_Plain(minor=False))
    axis.set_minor_formatter(_Plain(minor=True))


def signed_image(ax, image, vmax: Optional[float] = None, cmap: str = "RdBu_r", colorbar: bool = True, **kw):
    """imshow of a signed map with limits symmetric about 0 (red > 0 > blue) and a colorbar."""
    import numpy as np

    vmax = float(np.abs(image).max()) if vmax is None else float(vmax)
    vmax = vmax if vmax > 0 else 1.0
    im = ax.imshow(image, cmap=cmap, vmin=-vmax, vmax=vmax, **kw)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def plot_run(run_dir) -> List[Path]:
    """Draw accuracy.png, density.png and flops.png into ``run_dir``; return their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a folder; plot takes a run folder")
    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        raise RunFolderError(f"{run_dir / 'metrics.csv'} is missing or empty: no epoch to plot")
    needed = ["train_acc", "test_acc", "density", "bdensity", "flops_exact", "flops_ideal"]
    absent = [c for c in needed if c not in rows[0]]
    if absent:
        raise RunFolderError(f"{run_dir / 'metrics.csv'} has no column {absent[0]!r}"
                             + (f" (nor {absent[1:]})" if absent[1:] else "")
                             + "; plot draws the metrics.csv that train writes")
    for name in ("accuracy.png", "density.png", "flops.png"):    # before any is drawn
        if (run_dir / name).exists() and not (run_dir / name).is_file():
            raise RunFolderError(f"{run_dir / name} is not a file (a folder?); move it away")
    title = _title_of(run_dir)
    ep = [r["epoch"] for r in rows]
    col = lambda key: [r[key] for r in rows]  # noqa: E731
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, col("train_acc"), label="train (running, per epoch)")
    ax.plot(ep, col("test_acc"), label="test")
    ax.set(xlabel="epoch", ylabel="accuracy", title=f"Accuracy: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, run_dir / "accuracy.png"))

    # One panel per mask; the overall density is drawn thin and behind the
    # layers, since it is close to the largest layer's (fc1) and would hide it.
    layers = [k.split("/", 1)[1] for k in rows[0] if k.startswith("density/")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind, name_ in ((axes[0], "density", "Forward mask M"), (axes[1], "bdensity", "Backward mask D")):
        ax.plot(ep, col(kind), color="0.6", lw=5, alpha=0.5, zorder=1, label="overall (all layers)")
        for k, name in enumerate(layers):
            ax.plot(ep, col(f"{kind}/{name}"), lw=1.5, marker="o^sDv<>"[k % 7], ms=3, zorder=2, label=name)
        ax.set(xlabel="epoch", title=f"{name_}: fraction kept", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Mask densities: {title}")
    paths.append(_save(fig, run_dir / "density.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, col("flops_exact"), label="exact mode (dense weight gradient)")
    ax.plot(ep, col("flops_ideal"), label="ideal sparse implementation")
    ax.axhline(1.0, color="gray", ls=":", label="dense training")
    ax.set(xlabel="epoch", ylabel="training FLOPs so far / dense", ylim=(0, 1.05),
           title=f"Training cost relative to dense: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, run_dir / "flops.png"))
    return paths


def _title_of(run_dir: Path) -> str:
    """The run's model, method and dataset from its config.json (the folder's name without one)."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        return run_title(cfg["model"], cfg["method"], cfg["dataset"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return run_dir.name


def _save(fig, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole numbers
    fig.tight_layout()
    import matplotlib.pyplot as plt
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())      # a full PNG or the old one, never an empty file
    return path
