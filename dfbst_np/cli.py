"""``python -m dfbst_np``: train, plot, check-grads, bench.

Every failure a user can cause (an unknown name, a bad value, a used or
damaged run folder, a corrupt checkpoint or data file, a diverging run) is
a :class:`~dfbst_np.errors.DfbstError` and ends with one line on stderr and
exit status 2, not a traceback; any other exception is a bug and keeps its
traceback. Ctrl-C and SIGTERM stop a run cleanly and say how to continue it.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .errors import ConfigError, DfbstError

MODELS = ("lenet300_100", "lenet_5", "vgg16", "resnet18")
METHODS = ("dense", "dst", "dfbst")


# Flags a resumed run accepts although they are not in config.json, or that it checks itself.
_RESUME_FLAGS = {"resume", "out", "epochs", "threads", "no_progress", "data_root", "download",
                 "overwrite", "backend", "device"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(argv) -> set:
    """The ``train`` options given on the command line (argparse fills in the rest)."""
    p = parser()
    train = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    unset = object()
    for action in train._actions:
        action.default = unset
    ns = p.parse_args(argv)
    return {a.dest for a in train._actions if getattr(ns, a.dest, unset) is not unset}


def _resume_conflicts(args, given: set, cfg) -> list:
    """Flags that would change a resumed run's settings (it keeps those of config.json)."""
    from .train.data.datasets import canonical_name
    bad = []
    for dest in sorted(given - _RESUME_FLAGS):
        value = getattr(args, dest)
        if not hasattr(cfg, dest):
            bad.append(f"{_flag(dest)} (not a setting of a resumed run)")
            continue
        saved = getattr(cfg, dest)
        if dest == "dataset":
            try:
                value = canonical_name(value)
            except ConfigError:
                pass
        if value != saved:
            bad.append(f"{_flag(dest)} {value} (config.json: {saved})")
    if "out" in given and Path(args.out).resolve() != Path(args.resume).resolve():
        bad.append(f"--out {args.out} (the run is in {args.resume})")
    return bad


def _train(args, given: set) -> int:
    from .runtime import set_blas_threads
    from .train.config import RunConfig, default_config
    from .train.folder import CONFIG, check_new_folder, move_aside, resume_hint
    from .train.run import Run

    threads = args.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {threads!r}")
    if args.resume:
        if args.overwrite:
            raise ConfigError("--overwrite starts a new run; it cannot be used with --resume")
        out = Path(args.resume)
        cfg = RunConfig.load(out / CONFIG) if (out / CONFIG).is_file() else None
        if cfg is not None:
            bad = _resume_conflicts(args, given, cfg)
            if bad:
                raise ConfigError(
                    f"--resume {out} keeps the settings of {out / CONFIG}, but these differ: "
                    f"{'; '.join(bad)}. Drop them, or start a new run with --out NEW_FOLDER")
            if "threads" not in given and cfg.threads is not None:
                threads = cfg.threads
            elif cfg.threads is not None and threads != cfg.threads:
                print(f"warning: {out} was trained with {cfg.threads} BLAS thread(s), this resume "
                      f"uses {threads}: the numbers will differ from an uninterrupted run (another "
                      f"thread count sums in another order)", file=sys.stderr)
        set_blas_threads(threads)
        make = lambda: Run.resume(out, epochs=args.epochs, data_root=args.data_root,  # noqa: E731
                                  download=args.download or None, backend=args.backend,
                                  device=args.device)
    else:
        cfg = default_config(args.model, args.method, dataset=args.dataset, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                             beta=args.beta, seed=args.seed, dtype=args.dtype,
                             train_limit=args.train_limit, test_limit=args.test_limit,
                             kernel_path=args.kernel_path, weight_grad=args.weight_grad,
                             data_root=args.data_root, threads=threads,
                             download=args.download or None, backend=args.backend,
                             device=args.device)
        if args.epochs is None and cfg.dataset == "sample" and args.model == "lenet300_100" \
                and args.method == "dfbst":
            cfg.epochs, cfg.milestones = 20, (10, 15)   # the one-minute default
        cfg.validate(names={f: _flag(f) for f in given})
        out = Path(args.out or f"runs/{cfg.model}-{cfg.method}-{cfg.dataset}-seed{cfg.seed}")
        if not args.overwrite:
            check_new_folder(out)       # before the data is loaded: fail fast
        set_blas_threads(threads)
        make = lambda: Run(cfg, out)    # noqa: E731
    try:
        run = make()
        if run.cfg.backend == "torch":
            from .reference.backend import set_threads
            set_threads(threads)        # torch's CPU threads, as BLAS's above
        if args.overwrite:              # only now that the new run is ready to start
            moved = move_aside(out)
            if moved is not None:
                print(f"moved the old {out} aside to {moved}", file=sys.stderr)
        t0 = time.perf_counter()
        rows = run.train(progress=not args.no_progress)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"{how}; {resume_hint(out)}", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    _print_summary(run, rows, time.perf_counter() - t0)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so a run stops as cleanly as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


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
    if args.batch_size < 1 or args.seed < 0 or not 0 < args.tol < float("inf"):
        raise ConfigError(f"check-grads needs --batch-size >= 1, --seed >= 0 and a finite --tol > 0, "
                          f"got {args.batch_size}, {args.seed}, {args.tol}")
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
    t.add_argument("--overwrite", action="store_true",
                   help="start over in --out even if it holds a run (the old folder is moved aside)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.command is None:
        argv = ["train"] + argv
        args = parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:              # not the main thread: leave SIGTERM alone
        previous = None
    try:
        if args.command == "train":
            return _train(args, _given(argv))
        return args.func(args)
    except DfbstError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted",
              file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
