"""``train --textbook``: a run through dfbst_np.textbook writes the default run's metrics.

What is proven: a 1-epoch float64 run on the sample (256 training images)
with ``--textbook`` writes the same metrics.csv as the same run without it,
every column but ``seconds`` equal to 1e-10 relative (the two paths sum in
different orders), and its config.json records the setting; ``--textbook``
with the predicted weight gradient, which has no textbook form, is one line
on stderr and exit status 2.
"""
import json

import pytest

from dfbst_np.cli import main
from dfbst_np.train.run import read_metrics

ARGS = ["train", "--epochs", "1", "--train-limit", "256", "--test-limit", "100",
        "--dtype", "float64", "--no-progress"]


def test_textbook_run_writes_the_default_metrics(tmp_path, capsys):
    assert main(ARGS + ["--out", str(tmp_path / "fast")]) == 0
    assert main(ARGS + ["--out", str(tmp_path / "textbook"), "--textbook"]) == 0
    fast = read_metrics(tmp_path / "fast" / "metrics.csv")
    book = read_metrics(tmp_path / "textbook" / "metrics.csv")
    assert len(fast) == len(book) == 1
    assert set(fast[0]) == set(book[0]) and "test_acc" in fast[0]
    for key, value in fast[0].items():
        if key != "seconds":
            assert book[0][key] == pytest.approx(value, rel=1e-10, abs=1e-300), key
    assert json.loads((tmp_path / "textbook" / "config.json").read_text())["textbook"] is True
    assert json.loads((tmp_path / "fast" / "config.json").read_text())["textbook"] is False


def test_textbook_with_predicted_gradient_is_one_clear_error(tmp_path, capsys):
    assert main(ARGS + ["--out", str(tmp_path / "x"), "--textbook", "--weight-grad", "predicted"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "textbook" in err[0] and "predicted" in err[0]
