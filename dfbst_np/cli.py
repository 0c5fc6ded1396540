"""``python -m dfbst_np``: train, plot, check-grads, bench.

Every failure a user can cause (an unknown name, a missing data folder, a
corrupt checkpoint) ends with one line on stderr and exit status 2, not a
traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODELS = ("lenet300_100", "lenet_5", "vgg16", "resnet18")
METHODS = ("dense", "dst", "dfbst")


def _train(args) -> int:
    from .runtime import set_blas_threads
    from .train.config import default_config
    from .train.run import Run

    set_blas_threads(args.threads)
    if args.resume:
        run = Run.resume(args.resume, backend=args.backend, device=args.device)
        if args.epochs:
            run.cfg.epochs = args.epochs
    else:
        cfg = default_config(args.model, args.method, dataset=args.dataset, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                             beta=args.beta, seed=args.seed, dtype=args.dtype,
                             train_limit=args.train_limit, test_limit=args.test_limit,
                             kernel_path=args.kernel_path, weight_grad=args.weight_grad,
                             data_root=args.data_root,
                             download=args.download or None,
                             backend=args.backend, device=args.device)
        if args.epochs is None and cfg.dataset == "sample" and args.model == "lenet300_100" \
                and args.method == "dfbst":
            cfg.epochs, cfg.milestones = 20, (10, 15)   # the one-minute default
        out = Path(args.out or f"runs/{cfg.model}-{cfg.method}-{cfg.dataset}-seed{cfg.seed}")
        run = Run(cfg, out)
    if run.cfg.backend == "torch":
        from .reference.backend import set_threads
        set_threads(args.threads)
    t0 = time.perf_counter()
    rows = run.train(progress=not args.no_progress)
    _print_summary(run, rows, time.perf_counter() - t0)
    return 0


def _print_summary(run, rows, seconds: float) -> None:
    if not rows:
        print(f"nothing to do: {run.out} already has {run.epoch} epochs")
        return
    last = rows[-1]
    best = max(r["test_acc"] for r in rows)
    cfg = run.cfg
    print(f"\n{cfg.model} / {cfg.method} on {cfg.dataset}, {cfg.epochs} epochs, seed {cfg.seed} "
          f"({seconds:.0f} s; run folder {run.out})")
    table = [("test accuracy, final", f"{last['test_acc']:.4f}"),
             ("test accuracy, best", f"{best:.4f}"),
             ("forward density M", f"{last['density']:.4f}"),
             ("backward density D", f"{last['bdensity']:.4f}"),
             ("training FLOPs / dense, exact", f"{last['flops_exact']:.4f}"),
             ("training FLOPs / dense, ideal", f"{last['flops_ideal']:.4f}")]
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v}")


def _plot(args) -> int:
    from .train.plots import plot_run
    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _check_grads(args) -> int:
    try:
        from .reference.compare import check_model
    except ImportError as e:
        raise SystemExit(f"error: check-grads needs PyTorch ({e}); pip install torch==2.13.0")
    ok = check_model(args.model, args.method, batch_size=args.batch_size, seed=args.seed,
                     tol=args.tol)
    return 0 if ok else 1


def _bench(args) -> int:
    from .bench import run_cli
    return run_cli(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dfbst_np",
                                description="DFBST sparse training in plain NumPy.")
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a model (default: LeNet-300-100, DFBST, the sample)")
    t.add_argument("--model", choices=MODELS, default="lenet300_100")
    t.add_argument("--method", choices=METHODS, default="dfbst")
    t.add_argument("--dataset", help="sample, mnist, fashion_mnist, kmnist, cifar10, cifar100 "
                                     "(default: sample for LeNets, cifar10/100 for VGG/ResNet)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--alpha", type=float)
    t.add_argument("--beta", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--dtype", choices=("float32", "float64"))
    t.add_argument("--train-limit", type=int, help="use only the first N training images")
    t.add_argument("--test-limit", type=int, help="use only the first N test images")
    t.add_argument("--kernel-path", choices=("dense", "sparse", "auto"))
    t.add_argument("--weight-grad", choices=("exact", "predicted"),
                   help="exact: the paper's DFBST (default); predicted: the accelerated "
                        "approximation, dW only on the support M | previous D (dfbst only)")
    t.add_argument("--data-root", help="data folder (default $DFBST_DATA or ~/.cache/dfbst_np)")
    t.add_argument("--download", action="store_true", help="fetch missing data from the mirrors")
    t.add_argument("--out", help="run folder (default runs/MODEL-METHOD-DATASET-seedS)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument("--backend", choices=("numpy", "torch"),
                   help="who runs the steps: numpy (default) or torch, the PyTorch reference "
                        "step (same data, run folder and checkpoint; with --resume: the run's)")
    t.add_argument("--device", choices=("cpu", "cuda"),
                   help="cpu (default) or cuda (--backend torch only; with --resume: the run's)")
    t.add_argument("--threads", type=int, default=1,
                   help="BLAS threads, and torch's with --backend torch (default 1: the LeNets' "
                        "products are too small to share)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    pl = sub.add_parser("plot", help="draw PNGs from a run folder's metrics.csv")
    pl.add_argument("run_dir")
    pl.set_defaults(func=_plot)

    c = sub.add_parser("check-grads", help="compare every gradient with the PyTorch reference")
    c.add_argument("--model", choices=MODELS, default="lenet_5")
    c.add_argument("--method", choices=METHODS, default="dfbst")
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tol", type=float, default=1e-10)
    c.set_defaults(func=_check_grads)

    from .bench import add_arguments as bench_arguments
    b = sub.add_parser("bench", help="time whole training steps: dense, DST, DFBST (exact and "
                                     "predicted) on each kernel path, against PyTorch")
    bench_arguments(b)
    b.set_defaults(func=_bench)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        args = parser().parse_args(["train"] + list(argv or []))
    from .train.checkpoint import CheckpointError
    from .train.data import ChecksumError, DatasetNotFoundError
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError, CheckpointError, ChecksumError,
            DatasetNotFoundError, FloatingPointError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume RUN_DIR", file=sys.stderr)
        return 130
