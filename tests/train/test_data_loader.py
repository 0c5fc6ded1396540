"""Seeded batching, CIFAR crop/flip and normalisation."""
import numpy as np
import pytest

from dfbst_np.train.data import (CIFAR_MEAN, CIFAR_STD, cifar_test_transform, cifar_train_transform,
                                 crop, hflip, iterate_batches, normalize, random_crop_flip)


def _batches(seed, n=23, batch_size=5, **kw):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 1, 1, 2)
    y = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed) if seed is not None else None
    return list(iterate_batches(x, y, batch_size, rng, **kw))


def test_batches_are_seeded_and_cover_the_data_once():
    a, b, c = _batches(0), _batches(0), _batches(1)
    assert [len(yb) for _, yb in a] == [5, 5, 5, 5, 3]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    seen = np.concatenate([yb for _, yb in a])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for xb, yb in a:  # images and labels stay paired
        np.testing.assert_array_equal(xb[:, 0, 0, 0], 2 * yb)


def test_batches_in_order_and_drop_last():
    ordered = _batches(None, shuffle=False)
    assert np.concatenate([yb for _, yb in ordered]).tolist() == list(range(23))
    dropped = _batches(3, drop_last=True)
    assert [len(yb) for _, yb in dropped] == [5, 5, 5, 5]


def test_batches_reject_bad_arguments():
    x, y = np.zeros((4, 1, 1, 1), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        next(iterate_batches(x, y[:3], 2, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="positive int"):
        next(iterate_batches(x, y, 0, np.random.default_rng(0)))
    with pytest.raises(TypeError, match="default_rng"):
        next(iterate_batches(x, y, 2, None))


def test_crop_and_flip_on_a_hand_made_image():
    img = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)   # [[1 2 3] [4 5 6] [7 8 9]]
    same = crop(img, np.array([1]), np.array([1]), padding=1)
    np.testing.assert_array_equal(same, img)
    up_left = crop(img, np.array([0]), np.array([0]), padding=1)    # window starts in the padding
    np.testing.assert_array_equal(up_left[0, 0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    down_right = crop(img, np.array([2]), np.array([2]), padding=1)
    np.testing.assert_array_equal(down_right[0, 0], [[5, 6, 0], [8, 9, 0], [0, 0, 0]])
    mirrored = crop(img, np.array([1]), np.array([2]), padding=1, flip=np.array([True]))
    np.testing.assert_array_equal(mirrored[0, 0], [[0, 3, 2], [0, 6, 5], [0, 9, 8]])
    np.testing.assert_array_equal(hflip(img, np.array([True]))[0, 0], [[3, 2, 1], [6, 5, 4], [9, 8, 7]])
    np.testing.assert_array_equal(hflip(img, np.array([False])), img)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        crop(img, np.array([3]), np.array([0]), padding=1)


def test_random_crop_flip_is_seeded_and_matches_a_per_image_loop():
    rng = np.random.default_rng(5)
    x = rng.random((16, 3, 32, 32), dtype=np.float32)
    a = random_crop_flip(x, np.random.default_rng(7))
    b = random_crop_flip(x, np.random.default_rng(7))
    c = random_crop_flip(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    # The documented draws, replayed one image at a time.
    r = np.random.default_rng(7)
    top, left = r.integers(0, 9, 16), r.integers(0, 9, 16)
    flip = r.random(16) < 0.5
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(16):
        want = padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32]
        np.testing.assert_array_equal(a[i], want[..., ::-1] if flip[i] else want)
    assert 0 < flip.sum() < 16


def test_normalize_uses_the_spec_constants():
    assert CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR_STD == (0.2023, 0.1994, 0.2010)
    x = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    out = normalize(x)
    assert out.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - CIFAR_MEAN[c]) / CIFAR_STD[c], rtol=1e-6)
    np.testing.assert_array_equal(cifar_test_transform(x), out)
    assert cifar_train_transform(x, np.random.default_rng(0)).shape == x.shape
    with pytest.raises(ValueError, match="3 means"):
        normalize(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="float"):
        normalize(np.zeros((1, 3, 2, 2), np.uint8))
