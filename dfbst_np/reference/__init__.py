"""The PyTorch reference: DFBST as the authors' code computes it, with autograd.

This is the only part of dfbst_np that imports torch; ``import dfbst_np``
never loads it. It exists so that the hand-written NumPy implementation can be
checked, number for number, against an independent autograd implementation
of SPEC.md:

* :mod:`.layers`   ``BinaryStep`` (H and its estimator h), ``MaskedLinear``,
  ``MaskedConv2d`` (forward mask M, reset rule, backward mask D);
* :mod:`.models`   LeNet-300-100, LeNet-5, VGG-16, ResNet-18 and ``build``;
* :mod:`.trainer`  ``ReferenceTrainer`` (one reference training step) and
  ``evaluate``;
* :mod:`.convert`  state dicts and checkpoints between torch and NumPy;
* :mod:`.compare`  side-by-side comparison of a dfbst_np model / trainer with
  this reference;
* :mod:`.verifier` ``verify``: someone else's PyTorch training step checked
  stage by stage against dfbst_np (SPEC section 7), with :mod:`.capture`
  (the hooks), :mod:`.verdict` (tolerances, report), :mod:`.readings` and
  :mod:`.verify_cli` (``python -m dfbst_np verify``).
"""
try:
    import torch  # noqa: F401  (fail here, with a message, rather than deep inside)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dfbst_np.reference needs PyTorch, which is not installed; "
        "install it with: pip install torch==2.13.0 "
        "(the rest of dfbst_np works without it)") from exc

from .layers import BinaryStep, MaskedConv2d, MaskedLinear, binary_step, masked_layers
from .models import VGG16, LeNet5, LeNet300_100, ResNet18, build
from .trainer import ReferenceTrainer, evaluate
from .convert import load_checkpoint, save_checkpoint, to_numpy_state_dict, to_torch_state_dict
from .compare import Row, check_model, compare, format_table, max_rel_err
from .verdict import ATOL, RTOL, Divergence, VerifyReport
from .verifier import StepError, VerifyError, verify

__all__ = [
    "BinaryStep", "binary_step", "MaskedLinear", "MaskedConv2d", "masked_layers",
    "LeNet300_100", "LeNet5", "VGG16", "ResNet18", "build",
    "ReferenceTrainer", "evaluate",
    "to_numpy_state_dict", "to_torch_state_dict", "load_checkpoint", "save_checkpoint",
    "Row", "check_model", "compare", "format_table", "max_rel_err",
    "verify", "VerifyError", "StepError", "VerifyReport", "Divergence", "RTOL", "ATOL",
]
