"""``python -m dfbst_np``: every flag explains itself, the sample's schedule, what a run prints."""
import argparse

import pytest

from dfbst_np.cli import main, parser, sample_milestones, train_config


def subcommands():
    """{name: parser} of every subcommand, whichever exist."""
    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_every_flag_of_every_subcommand_has_help_and_a_default():
    commands = subcommands()
    assert {"train", "plot", "check-grads", "bench"} <= set(commands)
    for name, sub in commands.items():
        formatter = sub.formatter_class(prog=sub.prog)
        for action in sub._actions:
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), \
                f"{what} has no help text"
            shown = formatter._get_help_string(action)      # the text --help prints
            takes_value = action.option_strings and action.nargs != 0
            if takes_value and not action.required:
                assert "default" in shown, f"{what}: --help does not say its default: {shown!r}"
    top = [a for a in parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert all(a.help for a in top)


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("(default: lenet300_100)", "(default: dfbst)", "(default: 64)",
                  "(default: 1; with --resume the run's own)", "20 epochs", "10 and 15 of 20", "80,120",
                  "python -m dfbst_np plot RUN_DIR"):
        assert words in text, words


def config(*args):
    return train_config(parser().parse_args(["train", *args]))


def test_sample_schedule_is_the_same_with_or_without_epochs_20():
    bare = config()
    assert (bare.dataset, bare.epochs, bare.milestones) == ("sample", 20, (10, 15))
    assert config("--epochs", "20") == bare
    assert config("--epochs", "40").milestones == (20, 30)
    assert config("--epochs", "1").milestones == ()
    # every model and method on the sample, unless --epochs / --milestones say otherwise
    for args in (["--method", "dense"], ["--method", "dst"], ["--model", "lenet_5"]):
        cfg = config(*args)
        assert (cfg.epochs, cfg.milestones) == (20, (10, 15)), args
    assert config("--milestones", "5").milestones == (5,)
    assert config("--epochs", "8", "--milestones", "none").milestones == ()


def test_full_datasets_keep_the_reference_schedule():
    cfg = config("--dataset", "fashion_mnist")
    assert (cfg.epochs, cfg.milestones, cfg.lr) == (160, (80, 120), 0.1)
    assert config("--dataset", "fashion_mnist", "--epochs", "20").milestones == (80, 120)
    dst = config("--dataset", "fashion_mnist", "--method", "dst")
    assert (dst.epochs, dst.milestones, dst.lr, dst.clip_norm) == (20, (), 0.01, None)


@pytest.mark.parametrize("words, expect", [(["10,15"], (10, 15)), (["10", "15"], (10, 15)),
                                           (["10, 15"], (10, 15)), (["none"], ())])
def test_milestones_spellings(words, expect):
    assert parser().parse_args(["train", "--milestones", *words]).milestones == expect


@pytest.mark.parametrize("word", ["0", "ten", "-3", "1.5"])
def test_bad_milestones_are_a_usage_error(word, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["train", "--milestones", word])
    assert info.value.code == 2 and "--milestones" in capsys.readouterr().err


def test_a_run_prints_its_settings_labelled_epochs_and_how_to_plot(tmp_path, capsys):
    out = tmp_path / "run dir"
    assert main(["train", "--epochs", "2", "--train-limit", "256", "--test-limit", "100",
                 "--method", "dst", "--out", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    settings = " ".join(lines[:2])
    for words in ("lenet300_100 / dst on sample", "2 epochs", "lr 0.01 x0.1 after epochs 1",
                  "batch 64", "alpha 0.0005", "beta 0.1", "clip none", "seed 7", "float32",
                  "BLAS threads 1", "weight grad exact", "kernel path auto", f"run folder {out}"):
        assert words in settings, words
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2
    for words in ("accuracy train", "test", "density M", " D ", "FLOPs/dense exact", "ideal"):
        assert words in epochs[0], words
    assert lines[-1] == f"plots (accuracy, density, FLOPs): python -m dfbst_np plot '{out}'"
    assert "2 epochs (lr 0.01 x0.1 after epochs 1)" in "\n".join(lines)
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("lenet300_100 / dst on sample: resuming at epoch 2 of 3, "
                            "lr 0.01 x0.1 after epochs 1, batch 64"), first


def test_sample_milestones():
    assert sample_milestones(20) == (10, 15) and sample_milestones(160) == (80, 120)
    assert sample_milestones(2) == (1,) and sample_milestones(1) == ()
