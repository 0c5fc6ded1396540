"""VGG-16 and ResNet-18 end to end on CIFAR-format data, with measured step times.

CIFAR-10 and CIFAR-100 cannot be downloaded on the machines this project is
built on. To show that the CIFAR pipeline works end to end anyway, this
script writes real CIFAR python archives (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``: pickled batches inside a tar.gz, the exact
format of the published files) whose images are Fashion-MNIST pictures
padded to 32x32 and repeated over 3 channels. It then

1. reads them back with ``read_cifar_archive`` (checksum first, then the
   restricted unpickler), as ``load_dataset("cifar10")`` does;
2. trains VGG-16 (10 classes) and ResNet-18 (100 classes, of which the data
   uses 10) with DFBST at the reference settings, through the CIFAR
   augmentation and normalisation, for a few hundred steps each;
3. reports seconds per training step and the projected time of the paper's
   full schedule (160 epochs of 50,000 images, batch 64) on this machine.

    OPENBLAS_NUM_THREADS=1 python scripts/cifar_format_pipeline.py --steps 200

writes results/cifar_format/{vgg16,resnet18}-dfbst/ and summary.json.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfbst_np.train.config import default_config  # noqa: E402
from dfbst_np.train.data import cifar_test_transform, load_dataset, read_cifar_archive  # noqa: E402
from dfbst_np.train.run import Data, Run  # noqa: E402

STEPS_PER_EPOCH_CIFAR = -(-50_000 // 64)
LAYOUT = {  # member names and label key of the published archives
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", b"labels", {b"label_names": [b"c%d" % i for i in range(10)]}),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels",
                 {b"fine_label_names": [b"c%d" % i for i in range(100)],
                  b"coarse_label_names": [b"s%d" % i for i in range(20)]}),
}


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) float in [0, 1] -> (N, 3072) uint8 rows, CIFAR's layout (R, G, B planes)."""
    u8 = np.round(images[:, 0] * 255).astype(np.uint8)
    padded = np.pad(u8, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[:, None], 3, axis=1).reshape(len(u8), 3072)


def write_archive(path: Path, dataset: str, train, test) -> str:
    """Write a CIFAR python archive; return its md5."""
    base, train_names, test_name, meta_name, label_key, meta = LAYOUT[dataset]
    members = {}
    chunks = np.array_split(np.arange(len(train[1])), len(train_names))
    for name, idx in zip(train_names, chunks):
        members[name] = {b"data": to_cifar_rows(train[0][idx]), label_key: train[1][idx].tolist()}
    members[test_name] = {b"data": to_cifar_rows(test[0]), label_key: test[1].tolist()}
    members[meta_name] = meta
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=4)   # 5 is refused by the safe unpickler
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="training steps per model")
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--out", default="results/cifar_format")
    p.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fm_train = load_dataset("fashion_mnist", train=True)
    fm_test = load_dataset("fashion_mnist", train=False)
    n = args.steps * 64
    train = (fm_train.images[:n], fm_train.labels[:n])
    test = (fm_test.images[:args.test_images], fm_test.labels[:args.test_images])

    summary = {"command": f"OPENBLAS_NUM_THREADS=1 python scripts/cifar_format_pipeline.py "
                          f"--steps {args.steps}", "models": {}}
    for model in args.models:
        dataset = "cifar10" if model == "vgg16" else "cifar100"
        archive = out / ("cifar-10-python.tar.gz" if dataset == "cifar10" else "cifar-100-python.tar.gz")
        md5 = write_archive(archive, dataset, train, test)
        tx, ty, classes = read_cifar_archive(archive, dataset, train=True, md5=md5)
        vx, vy, _ = read_cifar_archive(archive, dataset, train=False, md5=md5)
        archive.unlink()                    # 40 MB of derived data: not worth committing
        data = Data(tx.astype(np.float32) / 255, ty, cifar_test_transform(vx.astype(np.float32) / 255),
                    vy, num_classes=len(classes), augment=True)
        cfg = default_config(model, "dfbst", dataset=f"{dataset}-format (Fashion-MNIST images)",
                             epochs=1, seed=7)
        shutil.rmtree(out / f"{model}-dfbst", ignore_errors=True)   # this script's own output, regenerated
        run = Run(cfg, out / f"{model}-dfbst", data=data)
        t0 = time.perf_counter()
        rows = run.train(progress=True)
        seconds = time.perf_counter() - t0
        per_step = rows[-1]["seconds"] / args.steps      # includes the test pass at the end
        summary["models"][model] = {
            "dataset": f"{dataset} format, {n} train / {len(vy)} test Fashion-MNIST images",
            "steps": args.steps, "batch_size": 64, "dtype": "float32",
            "seconds_total": round(seconds, 1), "seconds_per_step": round(per_step, 3),
            "projected_hours_160_epochs": round(per_step * STEPS_PER_EPOCH_CIFAR * 160 / 3600, 1),
            "train_acc": rows[-1]["train_acc"], "test_acc": rows[-1]["test_acc"],
            "forward_density": rows[-1]["density"], "backward_density": rows[-1]["bdensity"],
        }
        print(json.dumps(summary["models"][model], indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
