"""``python -m dfbst_np``: train, plot, check-grads, verify, bench.

Every failure a user can cause (an unknown name, a bad value, a used or
damaged run folder, a corrupt checkpoint or data file, a diverging run) is
a :class:`~dfbst_np.errors.DfbstError` and ends with one line on stderr and
exit status 2, not a traceback; any other exception is a bug and keeps its
traceback. Ctrl-C and SIGTERM stop a run cleanly and say how to continue it.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import signal
import sys
import time
from pathlib import Path

from .errors import ConfigError, DfbstError, is_disk_error
from .torch_import import require_torch


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


SAMPLE_EPOCHS = 20


def sample_milestones(epochs: int) -> tuple:
    """lr x0.1 after half and three quarters of ``epochs``: SPEC's 80 and 120 of 160, scaled.

    The committed sample's default schedule (10 and 15 of 20 epochs).
    """
    return tuple(sorted({m for m in (epochs // 2, 3 * epochs // 4) if m >= 1}))


def _is_sample(dataset: str) -> bool:
    from .train.data.datasets import canonical_name
    try:
        return canonical_name(dataset) == "sample"
    except ValueError:
        return False            # an unknown name is reported when the data is loaded


def train_config(args):
    """The RunConfig of a new run from ``train``'s arguments (the rules of ``train --help``)."""
    from .train.config import METHOD_OPTIONS, default_config
    cfg = default_config(args.model, args.method, dataset=args.dataset, epochs=args.epochs,
                         milestones=args.milestones,
                         batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                         beta=args.beta, seed=args.seed, dtype=args.dtype,
                         train_limit=args.train_limit, test_limit=args.test_limit,
                         kernel_path=args.kernel_path, weight_grad=args.weight_grad,
                         textbook=args.textbook or None,
                         data_root=args.data_root, threads=args.threads,
                         download=args.download or None, backend=args.backend, device=args.device,
                         **{k: getattr(args, k) for k in METHOD_OPTIONS})
    if _is_sample(cfg.dataset):     # the sample's schedule, for every model and method
        cfg.epochs = SAMPLE_EPOCHS if args.epochs is None else args.epochs
        if args.milestones is None:
            cfg.milestones = sample_milestones(cfg.epochs)
    return cfg


def _check_int(flag: str, value, low: int, high: int) -> None:
    """One line naming ``flag`` unless ``value`` is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{flag} must be an integer from {low} to {high}, got {value!r}")


def _train(args, given: set) -> int:
    from .runtime import set_blas_threads
    from .train.config import MAX_THREADS, RunConfig
    from .train.folder import (CONFIG, check_new_folder, lock_folder, move_aside, resume_hint,
                               unmovable)
    from .train.run import Run, check_resumable

    threads = args.threads
    _check_int("--threads", threads, 1, MAX_THREADS)
    for flag in ("out", "resume"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise ConfigError(f"{_flag(flag)} {value!r} names no folder; give a folder name")
    if args.backend == "torch":
        # NumPy execution choices: the torch step has neither, so say so instead of ignoring them.
        for flag in ("kernel_path", "textbook"):
            if flag in given:
                raise ConfigError(f"{_flag(flag)} chooses how the NumPy backend computes a step; "
                                  "--backend torch runs the PyTorch reference step: drop it")
    lock, out = None, None      # the folder's lock, held for the whole command
    try:
        if args.resume is not None:
            if args.overwrite:
                raise ConfigError("--overwrite starts a new run; it cannot be used with --resume")
            out = Path(args.resume)
            check_resumable(out)
            lock = lock_folder(out, "train --resume")       # before anything is read
            cfg = RunConfig.load(out / CONFIG)
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
            cfg = train_config(args)
            cfg.validate(names={f: _flag(f) for f in given})
            out = Path(args.out if args.out is not None
                       else f"runs/{cfg.model}-{cfg.method}-{cfg.dataset}-seed{cfg.seed}")
            if not args.overwrite:
                check_new_folder(out)       # before the data is loaded: fail fast
            else:
                why = unmovable(out)
                if why:
                    raise ConfigError(f"--overwrite never moves {why}; give the run's own folder "
                                      f"with --out")
                if out.is_dir():            # no other writer may use it until it is moved aside
                    lock = lock_folder(out, "train --overwrite")
            set_blas_threads(threads)
            make = lambda: Run(cfg, out)    # noqa: E731
        run = make()
        if run.cfg.backend == "torch":
            from .reference.backend import set_threads
            set_threads(threads)        # torch's CPU threads, as BLAS's above
        if args.overwrite:              # only now that the new run is ready to start
            moved = move_aside(out, lock)
            if lock is not None:        # the old folder, moved: the new run takes its own lock
                lock, old = None, lock
                old.release()
            if moved is not None:
                print(f"moved the old {out} aside to {moved}", file=sys.stderr)
        print(settings_line(run.cfg, run.out, threads, resumed_at=run.epoch if args.resume else None),
              flush=True)
        t0 = time.perf_counter()
        rows = run.train(progress=not args.no_progress)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"{how}; {resume_hint(out) if out is not None else 'nothing was written'}",
              file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if lock is not None:
            lock.release()
    _print_summary(run, rows, time.perf_counter() - t0)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so a run stops as cleanly as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _schedule(cfg) -> str:
    steps = ", ".join(str(m) for m in cfg.milestones)
    return f"lr {cfg.lr:g}" + (f" x{cfg.gamma:g} after epochs {steps}" if steps else " constant")


def settings_line(cfg, out, threads: int, resumed_at=None) -> str:
    """The effective settings of a run, in two lines, printed before it starts."""
    start = f"resuming at epoch {resumed_at} of {cfg.epochs}" if resumed_at is not None \
        else f"{cfg.epochs} epochs"
    clip = "none" if cfg.clip_norm is None else f"{cfg.clip_norm:g}"
    return (f"{cfg.model} / {cfg.method} on {cfg.dataset}: {start}, {_schedule(cfg)}, "
            f"batch {cfg.batch_size}, momentum {cfg.momentum:g}, weight decay {cfg.weight_decay:g}, "
            f"alpha {cfg.alpha:g}, beta {cfg.beta:g}, clip {clip}, seed {cfg.seed}, {cfg.dtype}\n"
            f"  BLAS threads {threads}, weight grad {cfg.weight_grad}, "
            f"kernel path {cfg.kernel_path or 'auto'}, run folder {out}" + _options_line(cfg))


def _options_line(cfg) -> str:
    """The method's options (its defaults, then what the run sets), for methods that have any."""
    from .methods import get
    impl = get(cfg.method).fast
    if not getattr(impl, "OPTIONS", None):
        return ""
    options = dict(impl.options, **cfg.method_options())
    return f"\n  {cfg.method}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in options.items())


def _print_summary(run, rows, seconds: float) -> None:
    if not rows:
        print(f"nothing to do: {run.out} already has {run.epoch} epochs")
        return
    last = rows[-1]
    best = max(r["test_acc"] for r in rows)
    cfg = run.cfg
    print(f"\n{cfg.model} / {cfg.method} on {cfg.dataset}, {cfg.epochs} epochs ({_schedule(cfg)}), "
          f"seed {cfg.seed} ({seconds:.0f} s; run folder {run.out})")
    table = [("test accuracy, final", f"{last['test_acc']:.4f}"),
             ("test accuracy, best", f"{best:.4f}"),
             ("forward density M", f"{last['density']:.4f}"),
             ("backward density D", f"{last['bdensity']:.4f}"),
             ("training FLOPs / dense, exact", f"{last['flops_exact']:.4f}"),
             ("training FLOPs / dense, ideal", f"{last['flops_ideal']:.4f}")]
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v}")
    print(f"plots (accuracy, density, FLOPs): python -m dfbst_np plot {shlex.quote(str(run.out))}")


def _plot(args) -> int:
    from .train.plots import plot_run
    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _check_grads(args) -> int:
    from .train.config import MAX_SEED
    _check_int("--batch-size", args.batch_size, 1, 4096)
    _check_int("--seed", args.seed, 0, MAX_SEED)
    if not 0 < args.tol < float("inf"):
        raise ConfigError(f"--tol must be a finite number > 0, got {args.tol}")
    require_torch("check-grads")
    from .reference.compare import check_model
    from .reference.backend import check_method
    check_method(args.method, "check-grads compares with it, so it cannot check this method")
    ok = check_model(args.model, args.method, batch_size=args.batch_size, seed=args.seed,
                     tol=args.tol)
    return 0 if ok else 1


def _verify(args) -> int:
    require_torch("verify")
    from .reference.verify_cli import run_cli
    from .reference.backend import check_method
    check_method(args.method, "verify compares your code with it, so it cannot verify this method")
    return run_cli(args)


def _bench(args) -> int:
    from .bench import run_cli
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        require_torch("bench's PyTorch variants (--no-torch skips them)")
    return run_cli(args)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends "(default: ...)" to a flag's help unless the text states it already.

    Flags without a value (switches) and flags whose default is None (it
    depends on other flags, so their help says what it is) get nothing added.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults and whose usage errors are one line; its
    subcommands' parsers are Parsers too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A usage mistake in one line, as every other mistake (argparse's own adds the usage)."""
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


class _Epochs(argparse.Action):
    """``--milestones 10,15`` or ``--milestones 10 15`` or ``--milestones none``."""

    def __call__(self, parser, namespace, values, option_string=None):
        epochs = []
        for value in values:
            for word in value.replace(",", " ").split():
                if word.lower() == "none":
                    continue
                if not word.isdigit() or int(word) < 1:
                    parser.error(f"{option_string}: expected epochs >= 1 separated by commas or "
                                 f"spaces, or 'none'; got {value!r}")
                epochs.append(int(word))
        setattr(namespace, self.dest, tuple(epochs))


TRAIN_EPILOG = f"""\
defaults: SPEC's reference settings for the model (SGD lr 0.1, momentum 0.9,
weight decay 1e-4, alpha 5e-6, beta 0.1, clipping at 1, lr x0.1 after
epochs 80 and 120, 160 epochs, batch 64, seed 7, float32); --method dst
takes DST's own (lr 0.01, alpha 5e-4, 20 epochs, no weight decay, no
clipping, constant lr).

on the committed sample (the default dataset of the LeNets), every model
and method trains {SAMPLE_EPOCHS} epochs unless --epochs says otherwise, with lr x0.1
after half and three quarters of the epochs (10 and 15 of 20; SPEC's 80 and
120 of 160) unless --milestones says otherwise. On the full datasets the
milestones stay at 80 and 120 (DST: none) whatever --epochs is.

every run prints its effective settings first, one line per epoch, and a
summary; its folder gets config.json, metrics.csv and checkpoint.npz after
every epoch (draw them with: python -m dfbst_np plot RUN_DIR).
"""


def parser() -> argparse.ArgumentParser:
    # the registries of models and methods (read here, not at import: the CLI starts at once)
    from .methods import names
    from .models import NAMES as MODELS
    METHODS = names()
    p = Parser(prog="python -m dfbst_np",
               description="DFBST sparse training in plain NumPy. Without a command: train.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND",
                           help="what to do; `python -m dfbst_np COMMAND --help` describes each")

    t = sub.add_parser("train", help="train a model (default: LeNet-300-100, DFBST, the sample)",
                       description="Train a model and write a run folder.", epilog=TRAIN_EPILOG)
    t.add_argument("--model", choices=MODELS, default="lenet300_100", help="network to train")
    t.add_argument("--method", choices=METHODS, default="dfbst",
                   help="dense: no masks; dst: forward mask M only (DST); dfbst: forward mask M "
                        "and backward mask D (the paper); gmp, set, rigl: the comparison methods "
                        "(gradual magnitude pruning, SET, RigL) at --density")
    t.add_argument("--dataset", help="sample, mnist, fashion_mnist, kmnist, cifar10, cifar100 "
                                     "(default: sample for the LeNets, cifar10 for vgg16, "
                                     "cifar100 for resnet18)")
    t.add_argument("--epochs", type=int,
                   help=f"epochs to train; with --resume the new total (default: {SAMPLE_EPOCHS} on "
                        "the sample, else 160, dst 20; with --resume the run's own)")
    t.add_argument("--milestones", nargs="+", action=_Epochs, metavar="EPOCHS",
                   help="epochs after which lr is multiplied by 0.1, e.g. 10,15 or 10 15, or none "
                        "(default: on the sample half and three quarters of --epochs, 10,15 for "
                        "20; else 80,120, dst none)")
    t.add_argument("--batch-size", type=int, help="training batch size (default: 64)")
    t.add_argument("--lr", type=float, help="SGD learning rate (default: 0.1, dst 0.01)")
    t.add_argument("--alpha", type=float,
                   help="weight of the threshold penalty alpha * sum exp(-t) (default: 5e-6, "
                        "dst 5e-4)")
    t.add_argument("--beta", type=float,
                   help="weight of V, the previous step's statistic of the backward-masked "
                        "gradients, in dfbst's loss (default: 0.1)")
    t.add_argument("--seed", type=int, help="seed of the weights and the batch order (default: 7)")
    t.add_argument("--dtype", choices=("float32", "float64"),
                   help="precision of weights, activations and gradients (default: float32)")
    t.add_argument("--train-limit", type=int, help="use only the first N training images "
                                                   "(default: all)")
    t.add_argument("--test-limit", type=int, help="use only the first N test images (default: all)")
    t.add_argument("--kernel-path", choices=("dense", "sparse", "auto"),
                   help="how masked products run: dense BLAS on W * M, sparse (CSR and sampled "
                        "kernels), or auto, chosen per layer from its density (default: auto)")
    t.add_argument("--weight-grad", choices=("exact", "predicted"),
                   help="exact: the paper's DFBST (default); predicted: the accelerated "
                        "approximation, dW only on the support M | previous D (dfbst only)")
    t.add_argument("--textbook", action="store_true", default=False,
                   help="run every step through dfbst_np.textbook with dense products: "
                        "the same numbers as the default fast path, slower (exact weight "
                        "gradient only; default: off, the fast path)")
    m = t.add_argument_group("options of gmp, set and rigl (SPEC section 8; defaults: the papers')")
    m.add_argument("--density", type=float,
                   help="overall forward density of the masked weights (gmp reaches it at "
                        "--update-end) (default: 0.1)")
    m.add_argument("--distribution", choices=("erk", "uniform"),
                   help="how --density is spread over layers: erk, Erdos-Renyi-kernel (layer l "
                        "keeps eps * sum(shape) / prod(shape), small layers denser, RigL's), or "
                        "uniform (every layer --density) (default: erk)")
    m.add_argument("--zeta", type=float,
                   help="set: fraction of each layer's active weights dropped (closest to 0) and "
                        "regrown at random after every epoch (default: 0.3, Mocanu et al.)")
    m.add_argument("--drop-fraction", type=float,
                   help="rigl: alpha, the fraction of active weights dropped and regrown at the "
                        "first update, cosine-annealed to 0 at --update-end (default: 0.3, Evci "
                        "et al.)")
    m.add_argument("--update-interval", type=int, metavar="STEPS",
                   help="gmp and rigl: steps between topology updates, Delta T (default: 100)")
    m.add_argument("--prune-start", type=float, metavar="FRACTION",
                   help="gmp: fraction of the run's steps where pruning starts (default: 0.1, "
                        "Zhu and Gupta's t0)")
    m.add_argument("--update-end", type=float, metavar="FRACTION",
                   help="fraction of the run's steps where gmp reaches --density (default: 0.6) "
                        "and after which rigl's mask stays fixed (default: 0.75)")
    t.add_argument("--data-root", help="data folder (default: $DFBST_DATA or ~/.cache/dfbst_np)")
    t.add_argument("--download", action="store_true",
                   help="fetch missing data from the mirrors, checked against the published "
                        "checksums (default: off)")
    t.add_argument("--out", help="run folder (default: runs/MODEL-METHOD-DATASET-seedS)")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved settings; --epochs sets a "
                        "new total (default: start a new run)")
    t.add_argument("--overwrite", action="store_true",
                   help="start over in --out even if it holds a run (the old folder is moved aside)")
    t.add_argument("--backend", choices=("numpy", "torch"),
                   help="who runs the steps: numpy, or torch (the PyTorch reference step; same "
                        "data, run folder and checkpoint) (default: numpy; with --resume the run's)")
    t.add_argument("--device", choices=("cpu", "cuda"),
                   help="where torch runs the steps: cpu, or cuda (--backend torch only) "
                        "(default: cpu; with --resume the run's)")
    t.add_argument("--threads", type=int, default=1,
                   help="BLAS threads, and torch's with --backend torch; one by default because "
                        "the LeNets' products are too small to share (default: 1; with --resume "
                        "the run's own)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar; the per-epoch lines are printed all the same")
    t.set_defaults(func=_train)

    pl = sub.add_parser("plot", help="draw PNGs from a run folder's metrics.csv",
                        description="Draw accuracy.png, density.png and flops.png into RUN_DIR.")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by train")
    pl.set_defaults(func=_plot)

    c = sub.add_parser("check-grads", help="compare every gradient with the PyTorch reference",
                       description="One training step of a model in float64, NumPy against the\n"
                                   "PyTorch reference; exits 1 on a mismatch. Needs torch.")
    c.add_argument("--model", choices=MODELS, default="lenet_5", help="network to compare")
    c.add_argument("--method", choices=METHODS, default="dfbst", help="masking method")
    c.add_argument("--batch-size", type=int, default=4, help="images in the compared batch")
    c.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    c.add_argument("--tol", type=float, default=1e-10,
                   help="largest relative error accepted for every quantity")
    c.set_defaults(func=_check_grads)

    v = sub.add_parser("verify", help="check your own PyTorch DST/DFBST training step against "
                                      "dfbst_np, stage by stage (exit 0 agrees, 1 diverges, 2 bad input)")
    v.add_argument("--model", required=True, metavar="MODULE_OR_FILE:FACTORY",
                   help="FACTORY() returns your torch model (cast to float64), e.g. my_code.py:make_model")
    v.add_argument("--step", required=True, metavar="MODULE_OR_FILE:FACTORY",
                   help="FACTORY(model) returns step(model, x, y, epoch, index) or (step, end_epoch)")
    v.add_argument("--method", choices=METHODS, default="dfbst",
                   help="the method your code implements (default: dfbst)")
    v.add_argument("--stress", action="store_true",
                   help="first move the model into every branch: t of both signs, u > 0, "
                        "clipping, a reset (default: off)")
    v.add_argument("--checkpoint", metavar="F.pth",
                   help="load this state dict into your model first (torch.load weights_only=True; "
                        "default: the factory's weights)")
    v.add_argument("--schedule", default="1:0,1:1,2:0,2:1,2:2,3:0", metavar="E:I,...",
                   help="(epoch, batch index) of each step (default: 1:0,1:1,2:0,2:1,2:2,3:0)")
    v.add_argument("--batch-size", type=int, default=8,
                   help="images per step, from the committed sample (default: 8)")
    v.add_argument("--input-shape", default="1,28,28", metavar="C,H,W",
                   help="image shape your model takes; the sample is repeated over channels and "
                        "zero-padded (default: 1,28,28)")
    for flag, what in (("lr", "learning rate"), ("momentum", "SGD momentum"),
                       ("weight-decay", "weight decay"), ("alpha", "threshold penalty weight"),
                       ("beta", "weight of beta * V_prev")):
        v.add_argument(f"--{flag}", type=float,
                       help=f"your {what} (default: the method's reference setting)")
    v.add_argument("--clip-norm", metavar="NORM|none",
                   help="your gradient clipping norm, or none (default: the method's reference setting)")
    v.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default: 1e-6)")
    v.add_argument("--atol", type=float, default=1e-12,
                   help="absolute floor for entries whose true value is 0 (default: 1e-12)")
    v.add_argument("--float32-masks", choices=("auto", "on", "off"), default="auto",
                   help="whether your masks are float32, as (x > 0).float() makes them "
                        "(default: auto, read from your model's forward)")
    v.add_argument("--name-map", metavar="YOURS=OURS,...",
                   help="rename your parameters, modules or mask attributes to dfbst_np's "
                        "(net.0=fc1, net=  strips a prefix, net.0.M=fc1.mask); or a .json file "
                        "of the same mapping (default: none, the twin takes your names)")
    v.add_argument("--table", action="store_true",
                   help="print every comparison, not only the verdict and the first divergence")
    v.set_defaults(func=_verify)

    from .bench import add_arguments as bench_arguments
    b = sub.add_parser("bench", help="time whole training steps: dense, DST, DFBST (exact and "
                                     "predicted) on each kernel path, against PyTorch",
                       description="Time whole training steps of the LeNets: dense, DST, DFBST "
                                   "(exact and\npredicted) on each kernel path, against PyTorch's "
                                   "reference and dense\ntraining. benchmarks/README.md describes "
                                   "the method.")
    bench_arguments(b)
    b.set_defaults(func=_bench)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:              # not the main thread: leave SIGTERM alone
        previous = None
    try:                            # Ctrl-C while the parser imports numpy, too: one line
        args = parser().parse_args(argv)
        if args.command is None:
            argv = ["train"] + argv
            args = parser().parse_args(argv)
        if args.command == "train":
            return _train(args, _given(argv))
        return args.func(args)
    except DfbstError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not is_disk_error(e):
            raise                   # not the disk's doing: a bug of ours, with its traceback
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
              + "; check the disk and the path, then run this again", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use a smaller --batch-size or --train-limit, or a machine "
              "with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted",
              file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
