"""PyTorch's default initialisation, drawn from a numpy Generator.

``nn.Linear`` and ``nn.Conv2d`` use kaiming_uniform with a = sqrt(5) on the
weight, which reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same
bound for the bias. The numbers differ from torch's generator, but the
distribution is the same; parity tests copy state dicts instead.
"""
from __future__ import annotations

import math

import numpy as np


def fan_in(shape) -> int:
    """Inputs per output unit: ``in`` for (out, in), ``in*kh*kw`` for conv."""
    return int(np.prod(shape[1:]))


def kaiming_uniform(shape, rng: np.random.Generator, dtype, a: float = math.sqrt(5)) -> np.ndarray:
    r"""Kaiming-uniform weights.

    .. math::
        W \sim U(-B, B), \quad B = \sqrt{3}\, \frac{\sqrt{2 / (1 + a^2)}}{\sqrt{\mathrm{fan\_in}}}
    """
    gain = math.sqrt(2.0 / (1 + a * a))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in(shape))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def bias_uniform(n: int, fan: int, rng: np.random.Generator, dtype) -> np.ndarray:
    r"""Bias in :math:`U(-1/\sqrt{\mathrm{fan\_in}}, 1/\sqrt{\mathrm{fan\_in}})`."""
    bound = 1.0 / math.sqrt(fan)
    return rng.uniform(-bound, bound, size=(n,)).astype(dtype)


_GLOBAL_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator that layers built without ``rng`` draw from (like torch.manual_seed)."""
    global _GLOBAL_RNG
    _GLOBAL_RNG = np.random.default_rng(seed)


def as_rng(rng) -> np.random.Generator:
    """Accept a Generator, a seed, or None: the library-wide generator, seeded 0 at import.

    Layers built without ``rng`` therefore differ from each other, and a
    program that builds them in the same order gets the same numbers.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    return _GLOBAL_RNG if rng is None else np.random.default_rng(rng)


def as_float_dtype(dtype, who: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dt.name}")
    return dt
