"""Self-grading exercises on DFBST, built on :mod:`dfbst_np.textbook`.

One module per idea, each with a ``check_*`` function that runs the learner's
function on random and edge cases, compares it with the textbook, and prints
a hint that names the mistake (the exercise notebooks are in
``notebooks/exercises/``, their solutions in ``notebooks/exercises/solutions/``):

* :mod:`.forward_mask`: :func:`check_forward_mask` (the mask and the reset);
* :mod:`.gradient_rule`: :func:`check_h`, :func:`check_layer_grads` (the STE, dW and dt);
* :mod:`.backward_mask`: :func:`check_backward_mask` (D, V and dV/du);
* :mod:`.training_step`: :func:`check_train_step` (the order of one step).

A check returns a :class:`Result` (truthy when every case passes; ``cases``
says which passed, for graders) and never raises for a wrong answer: a stub
that raises NotImplementedError reports "not implemented yet", any other
exception, complex or non-numeric outputs are one line. The function under
test is hidden while the learner's runs, so calling it is named. The teacher's
kit (otter-grader masters, release script) is described in docs/teaching.md.
This package imports :mod:`dfbst_np.textbook` only.
"""
from ._check import Result
from .backward_mask import check_backward_mask
from .forward_mask import check_forward_mask
from .gradient_rule import check_h, check_layer_grads
from .training_step import check_train_step, reference_step, softmax_cross_entropy

__all__ = ["Result", "check_forward_mask", "check_h", "check_layer_grads", "check_backward_mask",
           "check_train_step", "reference_step", "softmax_cross_entropy"]
