"""``python -m dfbst_np bench --quick`` runs end to end, so the benchmark cannot rot.

It times a few steps of every variant (dfbst_np dense; DST, DFBST and the
predicted mode on each kernel path; the textbook trainer's step; the PyTorch
reference's DFBST step and plain PyTorch dense training) at batch 8 and two
densities, in a separate process (it pins BLAS threads), and the
nothing-pinned rows (library defaults, no thread limit, the authors' step
with torch's default threads), which it times in child processes. Timings
are printed, never asserted: the test checks that every variant produced a
row with finite numbers, that the CSV and the PNG were written and that the
targets' summary and the library-defaults table were printed.
"""
import csv
import math
import subprocess
import sys

import dfbst_np
from dfbst_np.bench import textbook_available


def test_quick_bench_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dfbst_np", "bench", "--quick", "--threads", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       cwd=str(tmp_path))
    print(r.stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "bench-quick.csv")))
    assert (tmp_path / "bench-quick.png").stat().st_size > 0
    models = {"lenet300_100", "lenet_5"}
    assert {r["model"] for r in rows} == models
    pinned = [r for r in rows if r["setting"] == "pinned"]
    got = {(r["model"], r["impl"], r["variant"], r["path"], r["target_density"]) for r in pinned}
    unpinned = {(r["model"], r["setting"], r["impl"], r["variant"], r["target_density"])
                for r in rows if r["setting"] != "pinned"}
    for m in models:
        assert unpinned >= {(m, "library defaults", "dfbst_np", "dfbst", "0.2"),
                            (m, "no thread limit", "dfbst_np", "dfbst", "0.2"),
                            (m, "library defaults", "torch", "reference-dfbst", "0.2")}
        assert (m, "dfbst_np", "dense", "-", "1") in got
        assert (m, "torch", "dense", "-", "1") in got
        for d in ("0.2", "0.02"):
            assert (m, "torch", "reference-dfbst", "-", d) in got
            for v in ("dst", "dfbst", "dfbst-predicted"):
                for p in ("dense", "sparse", "auto"):
                    assert (m, "dfbst_np", v, p, d) in got
            assert ((m, "dfbst_np", "dfbst-textbook", "-", d) in got) == textbook_available()
    for row in rows:
        assert math.isfinite(float(row["median_ms"])) and float(row["median_ms"]) > 0
    for row in pinned:
        assert row["threads"] == "1"
        if row["impl"] == "dfbst_np":
            assert math.isfinite(float(row["forward_ms"])) and float(row["peak_mem_mb"]) > 0
    assert "auto vs best of dense/sparse" in r.stdout
    assert "| model | batch |" in r.stdout
    assert "DFBST, nothing pinned" in r.stdout


def test_bench_is_a_cli_command():
    from dfbst_np.cli import parser
    args = parser().parse_args(["bench", "--quick", "--no-torch", "--models", "lenet300_100"])
    assert args.quick and args.no_torch and args.models == ["lenet300_100"]
    assert dfbst_np.bench.MODELS == ("lenet300_100", "lenet_5")
