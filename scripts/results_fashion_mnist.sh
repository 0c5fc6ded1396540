#!/usr/bin/env bash
# Reproduce the Fashion-MNIST results table of README.md.
# Data: the full Fashion-MNIST of Debian's dataset-fashion-mnist package
# (apt-get install dataset-fashion-mnist), found without a download.
# One BLAS thread per run, so timings do not depend on what else is running.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run() {  # run MODEL METHOD EPOCHS
  local out="results/fashion_mnist/$1-$2-e$3"
  rm -rf "$out"
  python -m dfbst_np train --model "$1" --method "$2" --dataset fashion_mnist \
    --epochs "$3" --seed 7 --out "$out" --no-progress 2>&1 | tee "$out.log"
  mv "$out.log" "$out/train.log"
  python -m dfbst_np plot "$out"
}
for model in lenet300_100 lenet_5; do
  for method in dense dst dfbst; do
    run "$model" "$method" 20
  done
done
run lenet300_100 dfbst 160

# The comparison methods (SPEC section 8) at the final forward density DFBST
# reaches above (0.140 and 0.064) and at 0.1.
run_at() {  # run_at MODEL METHOD DENSITY
  local out="results/fashion_mnist/$1-$2-d$3-e20"
  rm -rf "$out"
  python -m dfbst_np train --model "$1" --method "$2" --density "$3" --dataset fashion_mnist \
    --epochs 20 --seed 7 --out "$out" --no-progress 2>&1 | tee "$out.log"
  mv "$out.log" "$out/train.log"
  python -m dfbst_np plot "$out"
}
for method in gmp set rigl; do
  for density in 0.14 0.1; do run_at lenet300_100 "$method" "$density"; done
  for density in 0.064 0.1; do run_at lenet_5 "$method" "$density"; done
done
