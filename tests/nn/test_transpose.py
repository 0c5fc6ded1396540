"""The blocked 2-D transpose (dfbst_np.nn.transpose) is exactly the transpose."""
import numpy as np
import pytest

import dfbst_np.nn.transpose as transpose
from dfbst_np.nn.transpose import transpose_2d

SHAPES = [(1, 1), (1, 9), (9, 1), (5, 7), (40, 3), (3, 40), (2880, 64), (64, 2880),
          (3200, 256), (256, 3000), (1000, 17), (5000, 40), (40, 5000)]


@pytest.fixture(params=[False, True], ids=["default", "small_blocks"])
def blocked(request, monkeypatch):
    """As is, and with 1-byte blocks: every tall transpose then goes in blocks of
    16 rows (the minimum), most with a remainder."""
    if request.param:
        monkeypatch.setattr(transpose, "BLOCK_BYTES", 1)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_transpose_2d_is_the_transpose(shape, dtype, blocked, rng):
    a = rng.standard_normal(shape).astype(dtype)
    t = transpose_2d(a)
    assert t.flags.c_contiguous and t.shape == shape[::-1] and t.dtype == dtype
    np.testing.assert_array_equal(t, a.T)
    # and on a non-contiguous source
    b = rng.standard_normal((shape[0], 2 * shape[1])).astype(dtype)[:, ::2]
    np.testing.assert_array_equal(transpose_2d(b), b.T)
