"""``dense``: no mask; every weight trained with its full gradient (the baseline)."""
from __future__ import annotations

from .base import Method
from .fast import FastDense
from .textbook_rule import TextbookRule

METHOD = Method(
    "dense", title="dense", paper="dense training (the baseline every sparse method is compared with)",
    fast=FastDense(), textbook=TextbookRule(), masked=False,
    doc="No mask: W_hat = W, dW = A.")
