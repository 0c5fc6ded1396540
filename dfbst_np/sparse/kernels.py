"""Every product a masked layer runs, in one namespace (the modules below hold the code).

The kernels are split by job:

* :mod:`~dfbst_np.sparse.paths`     the ``path`` argument and its module default
  (``"dense"``, ``"sparse"``, ``"auto"``; :func:`use_path`);
* :mod:`~dfbst_np.sparse.support`   the CSR support index (:class:`Support`,
  :func:`support_structure`);
* :mod:`~dfbst_np.sparse.products`  the forward, backward-data and full
  weight-gradient products (:class:`MaskedWeight`, :func:`prepare_weight`,
  :func:`prepare_masked`, :func:`weight_gradient`, ``dense_*``);
* :mod:`~dfbst_np.sparse.sampled`   the weight gradient on a support only
  (:func:`sampled_product`, :func:`sampled_product_csr`);
* :mod:`~dfbst_np.sparse.costs`     the cost model behind ``"auto"``
  (:data:`COSTS`, :func:`crossover_density`, :func:`choose_path`,
  :func:`sampled_crossover`), calibrated by :mod:`dfbst_np.bench.crossover` (on first use, :mod:`~dfbst_np.sparse.cost_cache`).

Layers call the products through this module (``kernels.prepare_weight``,
...), so that one attribute names each of them: the bench times them by
wrapping these names, and tests spy on them the same way.
"""
from .costs import (COSTS, KernelCosts, choose_path, crossover_density,
                    sampled_crossover)
from .paths import PATHS, get_default_path, set_default_path, use_path
from .products import (MaskedWeight, dense_backward_data, dense_backward_data_t, dense_forward_t,
                       prepare_masked, prepare_weight, weight_gradient, weight_gradient_t)
from .sampled import sampled_product, sampled_product_csr, sampled_product_dense
from .support import Support, support_structure

__all__ = [
    "PATHS", "KernelCosts", "COSTS",
    "set_default_path", "get_default_path", "use_path",
    "crossover_density", "choose_path", "sampled_crossover",
    "MaskedWeight", "prepare_weight", "prepare_masked",
    "sampled_product", "sampled_product_csr", "sampled_product_dense",
    "Support", "support_structure", "weight_gradient", "weight_gradient_t", "dense_backward_data",
    "dense_forward_t", "dense_backward_data_t",
]
