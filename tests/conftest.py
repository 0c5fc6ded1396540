import os
import shutil
import tempfile

import numpy as np
import pytest

# The "auto" path's cost model: the built-in constants, so that nothing a test
# asserts depends on this machine's timings; and a cache folder of the session's
# own, so that nothing is written to the user's cache. Set before any test (and
# inherited by the CLI subprocesses and notebook kernels the tests start).
os.environ["DFBST_NP_COST_MODEL"] = "builtin"
_CACHE = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dfbst_np-test-cache-")


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
