"""Print the results table of docs/results.md (Markdown) from run folders' metrics.csv and config.json.

    python scripts/results_table.py results/fashion_mnist/*/
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfbst_np.train.run import read_metrics  # noqa: E402


def main(dirs):
    print("| model | method | epochs | test acc final | test acc best | forward density | "
          "backward density | FLOPs / dense, exact | FLOPs / dense, ideal | wall time | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in map(Path, dirs):
        rows, cfg = read_metrics(d / "metrics.csv"), json.loads((d / "config.json").read_text())
        if not rows:
            continue
        last = rows[-1]
        best = max(r["test_acc"] for r in rows)
        wg = cfg.get("weight_grad") or "exact"
        extra = f" --weight-grad {wg}" if wg != "exact" else ""
        method = cfg["method"] + (f" ({wg} dW)" if extra else "")
        if cfg.get("density") is not None:          # gmp, set, rigl: their target density
            extra += f" --density {cfg['density']:g}"
            method += f" at {cfg['density']:g}"
        cmd = (f"`python -m dfbst_np train --model {cfg['model']} --method {cfg['method']} "
               f"--dataset {cfg['dataset']} --epochs {cfg['epochs']} --seed {cfg['seed']}{extra}`")
        print(f"| {cfg['model']} | {method} | {int(last['epoch'])} | {last['test_acc']:.4f} | "
              f"{best:.4f} | {last['density']:.4f} | {last['bdensity']:.4f} | "
              f"{last['flops_exact']:.3f} | {last['flops_ideal']:.3f} | "
              f"{last['seconds'] / 60:.1f} min | {cmd} |")


if __name__ == "__main__":
    main(sys.argv[1:])
