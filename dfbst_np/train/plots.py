"""PNG plots of a run folder's metrics.csv: accuracy, densities, FLOPs."""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..errors import RunFolderError
from .folder import read_metrics


def plot_run(run_dir) -> List[Path]:
    """Draw accuracy.png, density.png and flops.png into ``run_dir``; return their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        raise RunFolderError(f"{run_dir / 'metrics.csv'} is missing or empty: no epoch to plot")
    ep = [r["epoch"] for r in rows]
    col = lambda key: [r[key] for r in rows]  # noqa: E731
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, col("train_acc"), label="train (running, per epoch)")
    ax.plot(ep, col("test_acc"), label="test")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, run_dir / "accuracy.png"))

    layers = [k.split("/", 1)[1] for k in rows[0] if k.startswith("density/")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind, title in ((axes[0], "density", "Forward mask M"),
                            (axes[1], "bdensity", "Backward mask D")):
        for name in layers:
            ax.plot(ep, col(f"{kind}/{name}"), label=name, lw=1)
        ax.plot(ep, col(kind), "k--", lw=2, label="overall")
        ax.set(xlabel="epoch", title=f"{title}: fraction of weights kept", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[1].legend(fontsize=7, ncol=2)
    paths.append(_save(fig, run_dir / "density.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, col("flops_exact"), label="exact mode (dense weight gradient)")
    ax.plot(ep, col("flops_ideal"), label="ideal sparse implementation")
    ax.axhline(1.0, color="gray", ls=":", label="dense training")
    ax.set(xlabel="epoch", ylabel="training FLOPs so far / dense", ylim=(0, 1.05),
           title="Training cost relative to dense")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, run_dir / "flops.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
