"""The bench's figure: step time against forward density, one panel per (model, batch)."""
from __future__ import annotations

from typing import Optional

from .common import MODELS
from .report import find, pinned_rows


def _log_axis(axis, ticks=None) -> None:
    """Plain-number labels on a log axis: at ``ticks`` if given, else at 1, 2, 5 x 10^k."""
    from matplotlib import ticker
    if ticks is not None:
        axis.set_major_locator(ticker.FixedLocator(sorted(ticks)))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot(rows, path, threads: Optional[int] = None) -> None:
    """Step time against forward density, one panel per (model, batch).

    Pinned rows as lines; the textbook trainer's step as a grey line; the
    nothing-pinned rows (library defaults, no thread limit, the authors' step
    with torch's default threads) as single markers.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    unpinned = [r for r in rows if r.get("setting", "pinned") != "pinned"]
    rows = pinned_rows(rows)
    groups = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda g: (MODELS.index(g[0])
                    if g[0] in MODELS else 9, g[1]))
    ncols = 2 if len(groups) > 1 else 1
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.8 * nrows), squeeze=False)
    axes = [list(axes.ravel())]
    styles = {"dense": ":", "sparse": "--", "auto": "-"}
    colors = {"dst": "tab:blue", "dfbst": "tab:orange", "dfbst-predicted": "tab:green"}
    markers = {("dfbst_np", "library defaults"): ("*", "tab:orange", "dfbst_np dfbst [auto], nothing pinned"),
               ("dfbst_np", "no thread limit"): ("X", "tab:brown", "dfbst_np dfbst [auto], no thread limit"),
               ("torch", "library defaults"): ("P", "tab:purple", "torch reference dfbst, torch's default threads")}
    for ax, (m, b) in zip(axes[0], groups):
        sub = find(rows, model=m, batch=b)
        for name, color in colors.items():
            for p, ls in styles.items():
                pts = sorted((r["target_density"], r["median_ms"]) for r in sub
                             if r["impl"] == "dfbst_np" and r["variant"] == name and r["path"] == p)
                if pts:
                    ax.plot(*zip(*pts), ls=ls, marker="o", ms=3, color=color,
                            label=f"dfbst_np {name} [{p}]")
        for impl, name, color in (("dfbst_np", "dense", "black"), ("torch", "dense", "tab:red")):
            for r in find(sub, impl=impl, variant=name):
                ax.axhline(r["median_ms"], color=color, ls="-." if impl == "torch" else "-", lw=1,
                           label=f"{impl} dense")
        for name, color, ms, label in (("reference-dfbst", "tab:purple", "s", "torch reference dfbst"),
                                       ("dfbst-textbook", "grey", "d", "dfbst_np textbook trainer")):
            pts = sorted((r["target_density"], r["median_ms"]) for r in find(sub, variant=name))
            if pts:
                ax.plot(*zip(*pts), color=color, marker=ms, ms=3, label=label)
        for r in find(unpinned, model=m, batch=b):
            marker, color, label = markers[(r["impl"], r["setting"])]
            ax.plot([r["target_density"]], [r["median_ms"]], ls="none", marker=marker, ms=9,
                    color=color, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis, {r["target_density"] for r in sub})
        _log_axis(ax.yaxis)
        ax.set_xlabel("forward density (target fraction of weights kept)")
        ax.set_ylabel("training step, median ms")
        ax.set_title(f"{m}, batch {b}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[0][len(groups):]:
        ax.axis("off")
    handles = {}
    for ax in axes[0][:len(groups)]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    legend_in = 0.2 * -(-len(handles) // 4) + 0.7          # legend rows and the x label
    fig.set_size_inches(6.5 * ncols, 4.8 * nrows + legend_in)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    models = ", ".join(dict.fromkeys(m for m, _ in groups))
    batches = ", ".join(str(b) for b in sorted({b for _, b in groups}))
    pin = f"{threads} BLAS and torch thread(s) pinned" if threads else "threads pinned"
    fig.suptitle(f"One training step (forward, loss, backward, masks, clipping, SGD), float32: "
                 f"{models}; batch {batches}; {pin}\n(markers: a process with nothing pinned); "
                 f"median of the timed steps on a shared machine", fontsize=10)
    fig.tight_layout(rect=(0, (legend_in - 0.45) / (4.8 * nrows + legend_in), 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
