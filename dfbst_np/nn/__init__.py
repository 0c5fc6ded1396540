"""The engine: a dense NumPy network library with hand-written backward passes.

It knows nothing of masks; ``dfbst_np.sparse`` builds on it.
"""
from .module import Module
from .linear import Conv2d, Linear, WeightLayer
