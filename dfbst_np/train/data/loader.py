"""Seeded batching, CIFAR augmentation and normalisation (SPEC section 4).

All randomness comes from a ``numpy.random.Generator`` the caller passes,
so a run is reproduced by its seed. Augmentation is vectorised: one gather
crops and flips a whole batch.

The reference pipelines, in torchvision terms:

* MNIST family: ``ToTensor()`` only -- pixels in [0, 1], nothing else;
* CIFAR training: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
  ``ToTensor()``, ``Normalize(CIFAR_MEAN, CIFAR_STD)``; test: the last two.
  Padding is with zeros *before* normalisation, as there.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _check_images(images: np.ndarray, fn: str) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{fn}: expected images of shape (N, C, H, W), got {shape}")


def iterate_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                    rng: Optional[np.random.Generator] = None, shuffle: bool = True,
                    drop_last: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images[idx], labels[idx])`` batches covering the data once.

    Parameters
    ----------
    images, labels : numpy.ndarray
        Same length along axis 0.
    batch_size : int
        Positive.
    rng : numpy.random.Generator
        Draws the order (one ``rng.permutation`` per call); required when
        ``shuffle`` is True.
    shuffle : bool
        Random order if True, else the stored order.
    drop_last : bool
        Skip a final batch smaller than ``batch_size``.

    Yields
    ------
    (numpy.ndarray, numpy.ndarray)
        Copies, so a caller may modify them in place.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"iterate_batches: {n} images but {len(labels)} labels")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"iterate_batches: batch_size must be a positive int, got {batch_size!r}")
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            raise TypeError("iterate_batches: shuffle=True needs rng=np.random.default_rng(seed)")
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield images[idx], labels[idx]


def crop(images: np.ndarray, top: np.ndarray, left: np.ndarray, padding: int,
         flip: Optional[np.ndarray] = None) -> np.ndarray:
    """Zero-pad by ``padding``, cut an H x W window per image, optionally mirror it.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W).
    top, left : array of int, shape (N,)
        Window corner in the padded image, each in ``[0, 2 * padding]``;
        ``top = left = padding`` gives the image back.
    padding : int
        Zeros added on every side.
    flip : array of bool, shape (N,), optional
        Mirror image ``i`` left-right where ``flip[i]``.

    Returns
    -------
    numpy.ndarray
        (N, C, H, W), a new array of the input's dtype.
    """
    _check_images(images, "crop")
    n, c, h, w = images.shape
    top, left = np.asarray(top), np.asarray(left)
    if top.shape != (n,) or left.shape != (n,):
        raise ValueError(f"crop: top and left must have shape ({n},), got {top.shape}, {left.shape}")
    if (top.min(initial=0) < 0 or left.min(initial=0) < 0
            or top.max(initial=0) > 2 * padding or left.max(initial=0) > 2 * padding):
        raise ValueError(f"crop: offsets must lie in [0, {2 * padding}]")
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = top[:, None] + np.arange(h)                       # (N, H)
    cols = left[:, None] + np.arange(w)                      # (N, W)
    if flip is not None:
        flip = np.asarray(flip, dtype=bool)
        if flip.shape != (n,):
            raise ValueError(f"crop: flip must have shape ({n},), got {flip.shape}")
        cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def hflip(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirror left-right the images where ``flip`` is True; a new array."""
    _check_images(images, "hflip")
    flip = np.asarray(flip, dtype=bool)
    if flip.shape != (images.shape[0],):
        raise ValueError(f"hflip: flip must have shape ({images.shape[0]},), got {flip.shape}")
    return np.where(flip[:, None, None, None], images[..., ::-1], images)


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int = 4,
                     flip_prob: float = 0.5) -> np.ndarray:
    """CIFAR training augmentation: pad, random crop to the same size, random flip.

    Draws, in this order, ``top = rng.integers(0, 2*padding+1, N)``,
    ``left`` likewise, and ``flip = rng.random(N) < flip_prob``, then calls
    :func:`crop`. Same seed, same batch -> same result.
    """
    _check_images(images, "random_crop_flip")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("random_crop_flip: rng must be a numpy.random.Generator")
    n = images.shape[0]
    top = rng.integers(0, 2 * padding + 1, size=n)
    left = rng.integers(0, 2 * padding + 1, size=n)
    flip = rng.random(n) < flip_prob
    return crop(images, top, left, padding, flip)


def normalize(images: np.ndarray, mean: Sequence[float] = CIFAR_MEAN,
              std: Sequence[float] = CIFAR_STD) -> np.ndarray:
    """``(x - mean[c]) / std[c]`` per channel, in the images' float dtype.

    The default constants are SPEC section 4's (CIFAR-10 and CIFAR-100).
    """
    _check_images(images, "normalize")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"normalize: expected float images in [0, 1], got {images.dtype}")
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalize: {c} channels but {len(mean)} means and {len(std)} stds")
    m = np.asarray(mean, dtype=images.dtype).reshape(1, c, 1, 1)
    s = np.asarray(std, dtype=images.dtype).reshape(1, c, 1, 1)
    return (images - m) / s


def cifar_train_transform(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augment (pad 4, crop 32, flip) then normalise: the reference training input."""
    return normalize(random_crop_flip(images, rng, padding=4))


def cifar_test_transform(images: np.ndarray) -> np.ndarray:
    """Normalise only: the reference test input."""
    return normalize(images)
