"""What the refusal tests assert: one error line, exit 2, a run folder unchanged byte for byte."""
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = ["--train-limit", "128", "--test-limit", "50", "--dtype", "float64", "--no-progress"]


def sha256_listing(folder) -> dict:
    """Every entry under ``folder``: a file's sha256, or "<dir>": what "unchanged" means."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_error_line(err: str, *words) -> str:
    """The single ``error: ...`` line of ``err``, after checking it names every one of ``words``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def cli(*args, env=None, timeout=120, **kw):
    """``python -m dfbst_np ARGS`` in a subprocess (our copy: PYTHONPATH as the test's)."""
    full = dict(os.environ)
    full.pop("DFBST_KILL_AT", None)
    full.pop("DFBST_STOP_AT", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "dfbst_np", *map(str, args)], env=full,
                          capture_output=True, text=True, timeout=timeout, **kw)


def train(*args, kill_at=None, timeout=600):
    """``python -m dfbst_np train ARGS`` in a subprocess, SIGKILLed at ``kill_at`` if given
    (``DFBST_KILL_AT``, see dfbst_np.train.checkpoint.kill_point)."""
    return cli("train", *args, env={"DFBST_KILL_AT": kill_at} if kill_at else None,
               timeout=timeout)


def start_stopped(*args, stop_at: str, timeout: float = 120) -> subprocess.Popen:
    """Start ``python -m dfbst_np ARGS`` and return once it has SIGSTOPped itself at ``stop_at``
    (``DFBST_STOP_AT``, see dfbst_np.train.checkpoint.kill_point): a known state, no timing."""
    env = {k: v for k, v in os.environ.items() if k not in ("DFBST_KILL_AT", "DFBST_STOP_AT")}
    env["DFBST_STOP_AT"] = stop_at
    proc = subprocess.Popen([sys.executable, "-m", "dfbst_np", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:             # poll the child's state until it stops (bounded)
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            return proc
        if pid:             # it ended instead of stopping
            proc.returncode = os.waitstatus_to_exitcode(status)
            out, err = proc.stdout.read(), proc.stderr.read()
            pytest.fail(f"{args} ended (status {proc.returncode}) before {stop_at}: {out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{args} did not reach {stop_at} in {timeout} s")
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 120):
    """SIGCONT a stopped process and wait for it; (returncode, stdout, stderr)."""
    import signal
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
