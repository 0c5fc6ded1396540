"""``python -m dfbst_np bench``: the command line and the run."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, Sequence

from .common import (BATCHES, DENSITIES, MODELS, PATHS, UNPINNED_DENSITIES, load_average, machine,
                     set_threads, torch_module)
from .plots import plot
from .report import defaults_table, markdown_table, parts_table, targets, write_csv
from .parts import part_times
from .timing import copy_bandwidth, peak_memory, summarise, time_round_robin
from .unpinned import run_unpinned
from .variants import build_variants


def run(models: Sequence[str] = MODELS, batches: Sequence[int] = BATCHES,
        densities: Sequence[float] = DENSITIES, paths: Sequence[str] = PATHS, threads: int = 1,
        warmup: int = 5, rounds: int = 6, steps: int = 5, part_steps: int = 5,
        with_torch: bool = True, unpinned_densities: Sequence[float] = UNPINNED_DENSITIES,
        log: Callable[[str], None] = print) -> Dict[str, object]:
    """Run the benchmark; returns {"rows", "machine", "threads", "unpinned_threads"}.

    First the nothing-pinned rows (in a child process, at ``unpinned_densities``),
    then this process pins ``threads`` and times every other variant.
    """
    if with_torch and torch_module() is None:
        log("PyTorch is not installed: the torch variants are skipped")
        with_torch = False
    rows, unpinned = [], {"threads": None}
    if unpinned_densities:
        t0 = time.perf_counter()
        unpinned = run_unpinned(models, batches, unpinned_densities, with_torch, warmup, rounds, steps)
        rows += unpinned["rows"]
        log(f"nothing pinned (child process; threads outside a step {unpinned['threads']}): "
            f"{len(unpinned['rows'])} variants, {time.perf_counter() - t0:.0f} s")
    reported = set_threads(threads)
    info = machine()
    log(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs; BLAS {info['blas']}; "
        f"BLAS threads {reported}; load average {info['load']}")
    log(f"cost model of the auto path: {info['cost_model']}")
    info["copy_gbs"] = copy_bandwidth() / 1e9
    log(f"memory: a 1 MB copy runs at {info['copy_gbs']:.1f} GB/s (read + write), the speed the "
        f"mask work's floor is compared with")
    for model_name in models:
        for batch in batches:
            t0 = time.perf_counter()
            variants = build_variants(model_name, batch, densities, paths, with_torch)
            time_round_robin(variants, warmup, rounds, steps)
            for v in variants:
                parts = part_times(v.twin(), part_steps) if v.twin is not None else {}
                rows.append(summarise(v, model_name, batch, threads, parts, peak_memory(v)))
            log(f"{model_name} batch {batch}: {len(variants)} variants, "
                f"{time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "machine": info, "threads": reported, "unpinned_threads": unpinned["threads"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfbst_np bench", description="time whole training steps, side by side, in one process")
    add_arguments(p)
    return run_cli(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a few steps of batch 8 at two densities (CI): timings printed only, no "
                        "file written unless --out is given")
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default: 1)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help=f"networks to time (default: {' '.join(MODELS)})")
    p.add_argument("--batches", nargs="+", type=int,
                   help=f"batch sizes (default: {' '.join(map(str, BATCHES))}; --quick 8)")
    p.add_argument("--densities", nargs="+", type=float,
                   help=f"target forward densities (default: {' '.join(f'{d:g}' for d in DENSITIES)}; "
                        "--quick 0.2 0.02)")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch variants (default: time them when torch is installed)")
    p.add_argument("--rounds", type=int,
                   help="round-robin rounds over all variants (default: 6; --quick 2)")
    p.add_argument("--steps", type=int,
                   help="timed steps per variant per round (default: 5; --quick 2)")
    p.add_argument("--out", help="folder for bench.csv and bench.png (bench-quick.* with --quick) "
                                 "(default: benchmarks; with --quick none: nothing is written)")
    p.add_argument("--unpinned-densities", nargs="*", type=float,
                   help="densities of the nothing-pinned rows, each setting timed in a child "
                        "process (default: 0.1; --quick 0.2; the flag with no value skips them)")


def check_args(args) -> None:
    """Refuse bad values, and an --out that cannot hold the results, before any variant runs."""
    from ..errors import ConfigError
    from ..train.config import MAX_COUNT, MAX_THREADS
    # The upper bounds are train's: a huge value fails here in one line, not
    # as an OverflowError inside threadpoolctl or NumPy.
    for flag, top in (("threads", MAX_THREADS), ("batches", MAX_COUNT), ("rounds", MAX_COUNT),
                      ("steps", MAX_COUNT)):
        values = getattr(args, flag)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            if not 1 <= v <= top:
                raise ConfigError(f"--{flag} must be integers from 1 to {top}, got {v}")
    for flag in ("densities", "unpinned_densities"):
        for d in getattr(args, flag) or ():
            if not 0 < d <= 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must lie in (0, 1], got {d}")
    out = out_folder(args)
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot be a folder for the results ({e.strerror or e})") from None


def out_folder(args):
    """Where the CSV and PNG go: --out; else benchmarks/, or nowhere for --quick."""
    from pathlib import Path
    return Path(args.out) if args.out else None if args.quick else Path("benchmarks")


def run_cli(args) -> int:
    check_args(args)
    quick = args.quick
    kw = dict(models=args.models,
              batches=args.batches or ((8,) if quick else BATCHES),
              densities=args.densities or ((0.2, 0.02) if quick else DENSITIES),
              threads=args.threads, with_torch=not args.no_torch,
              warmup=1 if quick else 5, rounds=args.rounds or (2 if quick else 6),
              steps=args.steps or (2 if quick else 5), part_steps=1 if quick else 5,
              unpinned_densities=(args.unpinned_densities if args.unpinned_densities is not None
                                  else (0.2,) if quick else UNPINNED_DENSITIES))
    t0 = time.perf_counter()
    result = run(**kw)
    rows = result["rows"]
    out = out_folder(args)
    written = ""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = "bench-quick" if quick else "bench"
        write_csv(rows, out / f"{stem}.csv")
        plot(rows, out / f"{stem}.png", threads=args.threads)
        written = f"; wrote {out / (stem + '.csv')} and {out / (stem + '.png')}"
    print()
    print(markdown_table(rows))
    print()
    print(parts_table(rows))
    if any(r["setting"] != "pinned" for r in rows):
        print()
        print(f"Library defaults (a process with nothing pinned; threads outside a step "
              f"{result['unpinned_threads']}) against {args.threads} pinned thread(s); "
              f"median ms (threads in the step; 1/2: one, and two for a product large enough "
              f"to share):")
        print(defaults_table(rows))
    for key, what in (("median_ms", "median step times"),
                      ("min_ms", "fastest step of each variant, the closest to an idle machine "
                                 "when the machine is shared")):
        print(f"\nTargets ({what}):")
        for line in targets(rows, key):
            print(line)
    print(f"\n{len(rows)} variants in {time.perf_counter() - t0:.0f} s{written}; "
          f"load average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
