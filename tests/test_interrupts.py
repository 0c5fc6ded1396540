"""Ctrl-C and SIGTERM held back while a temporary file is created (dfbst_np.interrupts).

Signals here are raised with ``signal.raise_signal``, which delivers them to
this (the main) thread at once: Python runs the handler at the next bytecode,
so where it lands is deterministic.
"""
import os
import signal

import pytest

import dfbst_np.atomic as atomic
from dfbst_np.interrupts import deferred
from dfbst_np.atomic import write_atomic


class Stopped(Exception):
    pass


@pytest.fixture
def sigterm_raises():
    def handler(signum, frame):
        raise Stopped(signum)

    old = signal.signal(signal.SIGTERM, handler)
    yield handler
    signal.signal(signal.SIGTERM, old)


def test_a_signal_inside_the_block_arrives_at_its_end(sigterm_raises):
    after = []
    with pytest.raises(Stopped):
        with deferred():
            signal.raise_signal(signal.SIGTERM)
            after.append("the rest of the block ran")
    assert after == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_handlers_are_put_back_and_nothing_is_raised_without_a_signal(sigterm_raises):
    with deferred():
        assert signal.getsignal(signal.SIGTERM) is not sigterm_raises
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def test_sigint_arrives_as_keyboard_interrupt_and_an_ignored_signal_stays_ignored(sigterm_raises):
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            signal.raise_signal(signal.SIGINT)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with deferred():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_an_exception_in_the_block_still_puts_the_handlers_back(sigterm_raises):
    with pytest.raises(ZeroDivisionError):
        with deferred():
            1 / 0
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def _write_interrupted_after_create(folder, monkeypatch, write=write_atomic):
    """write(folder/config.json, b"new") with an os.open that creates the file, then receives
    SIGTERM before returning its descriptor; returns the file (which held "old")."""
    real = os.open

    def opened_then_signalled(path, flags, mode=0o777, **kw):
        fd = real(path, flags, mode, **kw)
        if str(path).endswith(".tmp"):
            signal.raise_signal(signal.SIGTERM)
        return fd

    target = folder / "config.json"
    target.write_text("old")
    monkeypatch.setattr(os, "open", opened_then_signalled)
    with pytest.raises(Stopped):
        write(target, b"new")
    monkeypatch.setattr(os, "open", real)
    return target


def test_an_interrupt_right_after_the_temporary_file_is_created_leaves_no_file(
        tmp_path, monkeypatch, sigterm_raises):
    target = _write_interrupted_after_create(tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert target.read_text() == "old"


def test_without_the_deferral_that_same_interrupt_leaves_a_temporary_file(
        tmp_path, monkeypatch, sigterm_raises):
    # The premise of the test above: the gap it closes is real (CI once hit it).
    import contextlib
    monkeypatch.setattr(atomic, "deferred", contextlib.nullcontext)
    target = _write_interrupted_after_create(tmp_path, monkeypatch)
    assert len(list(tmp_path.glob("config.json.*.tmp"))) == 1
    assert target.read_text() == "old"


def test_the_cost_cache_is_written_the_same_way(tmp_path, monkeypatch, sigterm_raises):
    from dfbst_np.sparse import cost_cache, costs

    def write(path, _):
        cost_cache.write(path, {"cpu": "test"}, dict(costs.BUILTIN))

    target = _write_interrupted_after_create(tmp_path, monkeypatch, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert target.read_text() == "old"
