r"""``dst``: Dynamic Sparse Training (Liu et al., ICLR 2020).

A forward mask M = H(|W| - t) with learned per-row thresholds t (taken as
they are), the threshold penalty alpha * sum exp(-t), the dense weight
gradient. Reference settings: DST's own MNIST ones (SPEC section 4).
"""
from __future__ import annotations

from .base import Method
from .thresholds import FastThresholds, TextbookThresholds

METHOD = Method(
    "dst", title="DST", paper="Liu, Xu, Shi, Cheng, Lin and Sun, \"Dynamic Sparse Training: Find Efficient "
                 "Sparse Network From Scratch With Trainable Masked Layers\", ICLR 2020",
    fast=FastThresholds(), textbook=TextbookThresholds(), params=("threshold",),
    threshold_mask=True,
    defaults=dict(lr=0.01, alpha=5e-4, epochs=20, clip_norm=None, milestones=(), weight_decay=0.0),
    doc="M = H(|W| - t); loss + alpha sum exp(-t); dense dW.")
