r"""A dfbst_np twin of any torch model made of the layers dfbst_np has (SPEC section 7a).

:func:`twin_from_torch` reads the user's model itself, not a list of known
architectures:

* **which layers**: every leaf module is translated by its type and its
  parameters. A *masked* layer is recognised by its parameters, whatever
  its class is called: ``weight`` (2-D: linear, 4-D: convolution), an
  optional ``bias``, ``threshold`` (t, one per output unit) and, for DFBST,
  ``dthreshold`` (u). ``nn.Linear``, ``nn.Conv2d``, ``nn.ReLU``,
  ``nn.MaxPool2d``, ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d(1)``,
  ``nn.BatchNorm1d/2d``, ``nn.Flatten``, ``nn.Identity`` and ``nn.Dropout``
  with p = 0 (its eval-equivalent form, the identity: a random dropout mask
  cannot be reproduced) are the rest;
* **in which order**: the model's ``forward`` is traced with ``torch.fx``
  (the layers above are leaves, so a masked layer's own data-dependent
  forward is never traced into), which also gives the functional calls
  (``F.relu``, ``F.max_pool2d``, ``torch.flatten``, ``x.reshape(N, -1)``)
  and the residual additions ``out + identity``;
* **names**: the twin's modules sit at the torch modules' own dotted names,
  so its state dict has the torch model's names and no name map is needed.

One probe forward on a copy of the model (the user's model is never run
for this) gives every node's shape, used to check what the attributes say
(a convolution's stride and padding), and the dtype of every tensor each
masked layer makes: float32 tensors inside a float64 masked layer are its
masks (``(x > 0).float()``), so the twin's ``float32_masks`` follows what
the forward really does, layer by layer.

Anything else (an activation dfbst_np does not have, a module called twice
with parameters, a multiplication of two activations) is refused with a
:class:`TwinError` naming the module or the operation.
"""
from __future__ import annotations

import copy
import operator
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import methods
from ..errors import DfbstError
from ..nn.activations import ReLU
from ..nn.batchnorm import BatchNorm1d, BatchNorm2d
from ..nn.linear import Conv2d, Linear
from ..nn.module import Module
from ..nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from ..nn.shape import Flatten
from ..sparse.masked import MaskedConv2d, MaskedLinear

__all__ = ["TwinError", "TraceError", "TracedTwin", "twin_from_torch", "is_masked_module"]

_MASKED_PARAMS = {"weight", "bias", "threshold", "dthreshold"}


class TwinError(DfbstError, ValueError):
    """The torch model holds something the twin cannot express; the message names it."""


class TraceError(TwinError):
    """torch.fx could not trace the model's forward (so its order is unknown)."""


def is_masked_module(module: nn.Module) -> bool:
    """A user's masked layer: own parameters ``weight`` and ``threshold`` (and maybe ``bias``, ``dthreshold``)."""
    own = dict(module.named_parameters(recurse=False))
    return "weight" in own and "threshold" in own


def _leaf(module: nn.Module) -> bool:
    if is_masked_module(module):
        return True
    return isinstance(module, (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
                               nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
                               nn.Identity, nn.Dropout)) or not list(module.children())


class _Tracer(torch.fx.Tracer):
    """Stops at the layers the twin translates; traces through everything else, including
    modules made inside ``forward`` (``nn.AvgPool2d(2)(x)``), which have no name to call."""

    def trace(self, root, *args, **kwargs):
        self._installed = {id(m) for m in root.modules()}
        return super().trace(root, *args, **kwargs)

    def call_module(self, m, forward, args, kwargs):
        if id(m) not in self._installed:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _leaf(m)


class _Container(Module):
    """A torch container's place in the name tree (its children are run by the graph)."""

    def forward(self, x):       # pragma: no cover - the graph never calls it
        raise RuntimeError(f"{self.describe()} is run by its model's graph")

    def backward(self, dy):     # pragma: no cover
        raise RuntimeError(f"{self.describe()} is run by its model's graph")


class _Add(Module):
    """y = a + b (a residual connection); the gradient goes to both."""

    def forward(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"residual add: shapes {a.shape} and {b.shape} differ")
        return a + b

    def backward(self, dy):
        return dy, dy


class _Identity(Module):
    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


class TracedTwin(Module):
    r"""A dfbst_np model whose forward is the traced graph of a torch model.

    Children sit at the torch modules' dotted names; ``ops`` are the graph's
    nodes in forward order, each ``(module, input nodes, output node)``.
    Backward runs them in reverse and adds the gradients of a node used
    twice (the input of a residual block):

    .. math:: \frac{\partial L}{\partial x} = \sum_{\text{uses } k} J_k^\top \frac{\partial L}{\partial y_k}
    """

    # the trainer walks ``order`` to skip dL/dx of a chain's first layer; a
    # graph is no chain, so no layer is skipped
    order: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "ops", [])
        object.__setattr__(self, "output", None)
        object.__setattr__(self, "input", None)
        # the forward ends with log_softmax (as for F.nll_loss): cross-entropy
        # is the same on z and on log_softmax(z), so the twin trains on z and
        # the verifier compares log_softmax of its logits
        object.__setattr__(self, "output_log_softmax", False)
        object.__setattr__(self, "_extra", [])    # functional ops' modules (no parameters)

    def place(self, path: str, module: Module) -> None:
        """Register ``module`` at the dotted ``path``, creating containers on the way."""
        parent = self
        parts = path.split(".")
        for part in parts[:-1]:
            child = dict(parent.named_children()).get(part)
            if child is None:
                child = _Container()
                setattr(parent, part, child)
            parent = child
        setattr(parent, parts[-1], module)

    def add_unnamed(self, module: Module) -> None:
        """Keep a functional op's module (no parameters, no name; train/eval reach it)."""
        self._extra.append(module)

    def train(self, mode: bool = True) -> "TracedTwin":
        for m in list(self.modules()) + list(self._extra):
            m.training = mode
        return self

    def forward(self, x):
        values = {self.input: x}
        for module, inputs, out in self.ops:
            values[out] = module.forward(*[values[i] for i in inputs])
        return values[self.output]

    def backward(self, dy):
        grads: Dict[str, np.ndarray] = {self.output: dy}
        for module, inputs, out in reversed(self.ops):
            g = grads.pop(out, None)
            if g is None:
                continue            # a node nothing downstream used
            back = module.backward(g)
            back = back if isinstance(back, tuple) else (back,)
            for i, gi in zip(inputs, back):
                grads[i] = gi if i not in grads else grads[i] + gi
        return grads.get(self.input)


def _pair_int(value, what: str, name: str) -> int:
    v = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(set(v)) != 1 or not isinstance(v[0], int):
        raise TwinError(f"verify: {name} has {what}={value!r}; the twin's layers take one int "
                        "for both directions")
    return v[0]


def _conv_geometry(module: nn.Module, name: str, shape_in, shape_out, kh: int, kw: int):
    """stride and padding of a convolution: its attributes, checked against the traced shapes."""
    for attr, ok in (("dilation", 1), ("groups", 1)):
        v = getattr(module, attr, ok)
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        if any(int(e) != ok for e in v):
            raise TwinError(f"verify: {name} has {attr}={getattr(module, attr)!r}; the twin's "
                            f"convolutions have {attr} {ok} only")
    if getattr(module, "padding_mode", "zeros") != "zeros" or isinstance(getattr(module, "padding", 0), str):
        raise TwinError(f"verify: {name} pads with {getattr(module, 'padding_mode', None)!r} / "
                        f"{getattr(module, 'padding', None)!r}; the twin's convolutions take an "
                        "int zero padding")
    stride = _pair_int(getattr(module, "stride", 1), "stride", name)
    padding = _pair_int(getattr(module, "padding", 0), "padding", name)
    if shape_in is not None and shape_out is not None:
        H, W = shape_in[2], shape_in[3]
        expected = ((H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1)
        if tuple(shape_out[2:]) != expected:
            raise TwinError(
                f"verify: {name}: stride {stride} and padding {padding} (read from its attributes, "
                f"1 and 0 when absent) give {expected} from {tuple(shape_in)}, but your forward gave "
                f"{tuple(shape_out)}; give the layer stride/padding attributes")
    return stride, padding


def _masked(module: nn.Module, name: str, method: str, shapes, f32: bool) -> Module:
    own = dict(module.named_parameters(recurse=False))
    extra = sorted(set(own) - _MASKED_PARAMS)
    if extra:
        raise TwinError(f"verify: {name} looks like a masked layer (weight, threshold) but also "
                        f"has parameters {extra}, which the twin does not have")
    W = own["weight"]
    out = W.shape[0]
    for key in ("bias", "threshold", "dthreshold"):
        if key in own and tuple(own[key].shape) != (out,):
            raise TwinError(f"verify: {name}.{key} has shape {tuple(own[key].shape)}; expected "
                            f"({out},), one per output unit of weight {tuple(W.shape)}")
    rule = methods.get(method)
    if rule.learns_backward_mask and "dthreshold" not in own:
        raise TwinError(f"verify: {name} has a threshold but no dthreshold; method {method!r} needs "
                        "both (u is the parameter dthreshold)")
    if not rule.learns_backward_mask and "dthreshold" in own:
        raise TwinError(f"verify: {name} has a dthreshold (u), which method {method!r} does not "
                        "have; is your method 'dfbst'?")
    if not rule.threshold_mask:
        raise TwinError(f"verify: {name} has a threshold, which method {method!r} does not have")
    kw = dict(method=method, bias="bias" in own, dtype=np.float64, float32_masks=f32)
    if W.dim() == 2:
        return MaskedLinear(W.shape[1], out, **kw)
    if W.dim() == 4:
        stride, padding = _conv_geometry(module, name, *shapes, W.shape[2], W.shape[3])
        return MaskedConv2d(W.shape[1], out, (W.shape[2], W.shape[3]), stride=stride,
                            padding=padding, **kw)
    raise TwinError(f"verify: {name}.weight has {W.dim()} dimensions; the twin's masked layers "
                    "are linear (2) or 2-D convolutions (4)")


def _pool_args(module, name, kind):
    if getattr(module, "ceil_mode", False):
        raise TwinError(f"verify: {name} ({kind}) has ceil_mode=True; the twin pools in floor mode")
    if kind == "MaxPool2d" and (_pair_int(module.dilation, "dilation", name) != 1
                                or module.return_indices):
        raise TwinError(f"verify: {name} (MaxPool2d) has dilation or return_indices; not in the twin")
    if kind == "AvgPool2d" and (not module.count_include_pad or module.divisor_override):
        raise TwinError(f"verify: {name} (AvgPool2d) has count_include_pad=False or a "
                        "divisor_override; the twin counts padding, as PyTorch's default")
    return module.kernel_size, module.stride, module.padding


def _translate(module: nn.Module, name: str, method: str, shapes, f32: bool) -> Module:
    """The dfbst_np module for one torch leaf module (TwinError naming it otherwise)."""
    kind = type(module).__name__
    d = np.float64
    if is_masked_module(module):
        return _masked(module, name, method, shapes, f32)
    own = dict(module.named_parameters(recurse=False))
    if "dthreshold" in own:
        raise TwinError(f"verify: {name} ({kind}) has a dthreshold but no threshold")
    if isinstance(module, nn.Linear):
        return Linear(module.in_features, module.out_features, bias=module.bias is not None, dtype=d)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        stride, padding = _conv_geometry(module, name, *shapes, kh, kw)
        return Conv2d(module.in_channels, module.out_channels, (kh, kw), stride=stride,
                      padding=padding, bias=module.bias is not None, dtype=d)
    if set(own) in ({"weight"}, {"weight", "bias"}) and not list(module.children()) \
            and own["weight"].dim() in (2, 4):
        # a layer of the user's own class with W and b only (a masked layer
        # in dense mode): a linear map or a convolution, read from its W
        W = own["weight"]
        if W.dim() == 2:
            return Linear(W.shape[1], W.shape[0], bias="bias" in own, dtype=d)
        stride, padding = _conv_geometry(module, name, *shapes, W.shape[2], W.shape[3])
        return Conv2d(W.shape[1], W.shape[0], (W.shape[2], W.shape[3]), stride=stride,
                      padding=padding, bias="bias" in own, dtype=d)
    if isinstance(module, nn.ReLU):
        return ReLU(dtype=d)
    if isinstance(module, (nn.Identity,)):
        return _Identity()
    if isinstance(module, nn.Dropout):
        if module.p != 0:
            raise TwinError(f"verify: {name} (Dropout, p={module.p}) drops at random, which no twin "
                            "can reproduce; verify with p=0 (its eval-equivalent form)")
        return _Identity()
    if isinstance(module, nn.Flatten):
        if module.end_dim not in (-1, len(shapes[0] or (0, 0)) - 1):
            raise TwinError(f"verify: {name} (Flatten) has end_dim={module.end_dim}; the twin "
                            "flattens to the last axis")
        return Flatten(start_dim=module.start_dim, dtype=d)
    if isinstance(module, nn.MaxPool2d):
        k, s, p = _pool_args(module, name, kind)
        return MaxPool2d(k, stride=s, padding=p, dtype=d)
    if isinstance(module, nn.AvgPool2d):
        k, s, p = _pool_args(module, name, kind)
        return AvgPool2d(k, stride=s, padding=p, dtype=d)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size not in (1, (1, 1), [1, 1]):
            raise TwinError(f"verify: {name} (AdaptiveAvgPool2d) has output_size={size!r}; the "
                            "twin pools to 1x1 only")
        return AdaptiveAvgPool2d(1, dtype=d)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.affine or not module.track_running_stats or module.momentum is None:
            raise TwinError(f"verify: {name} ({kind}) needs affine=True, track_running_stats=True "
                            "and a momentum number for the twin")
        cls = BatchNorm1d if isinstance(module, nn.BatchNorm1d) else BatchNorm2d
        return cls(module.num_features, eps=module.eps, momentum=module.momentum, dtype=d)
    raise TwinError(f"verify: your model's module {name} ({kind}) has no dfbst_np twin; the twin "
                    "has masked linear/conv layers (weight, threshold, dthreshold), Linear, "
                    "Conv2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), BatchNorm1d/2d, "
                    "Flatten, Identity and Dropout(p=0)")


class _DtypeWatch(TorchFunctionMode):
    """Records, per masked layer, whether its forward made a float32 tensor."""

    def __init__(self):
        super().__init__()
        self.current: Optional[str] = None
        self.float32: Dict[str, bool] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.current is not None:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            # a float32 0/1 tensor of more than one entry: a mask (a float32
            # constant such as torch.tensor(0.01) is not one)
            if any(isinstance(o, torch.Tensor) and o.dtype == torch.float32 and o.numel() > 1
                   and bool(((o == 0) | (o == 1)).all()) for o in outs):
                self.float32[self.current] = True
        return out


def _probe(model: nn.Module, x: torch.Tensor):
    """Trace ``model`` (a copy of it) on ``x``: the graph, the shape of every node, float32 masks."""
    try:
        probe = copy.deepcopy(model)
    except Exception as e:     # a model that cannot be copied cannot be probed safely
        raise TraceError(f"verify: your model cannot be copied to trace it ({type(e).__name__}: "
                         f"{e})") from e
    try:
        graph = _Tracer().trace(probe)
    except Exception as e:
        raise TraceError(f"verify: torch.fx cannot trace your model's forward ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    gm = torch.fx.GraphModule(probe, graph)
    watch = _DtypeWatch()
    masked = {name for name, m in probe.named_modules() if is_masked_module(m)}
    handles = []
    for name, m in probe.named_modules():
        if name in masked:
            def pre(mod, inp, name=name):
                watch.current = name
                watch.float32.setdefault(name, False)

            def post(mod, inp, out):
                watch.current = None
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    shapes: Dict[str, tuple] = {}
    try:
        from torch.fx.passes.shape_prop import ShapeProp
        with torch.no_grad(), watch:
            ShapeProp(gm).propagate(x)
    except Exception as e:
        raise TwinError(f"verify: your model's forward failed on the first batch while tracing "
                        f"({type(e).__name__}: {e})") from e
    finally:
        for h in handles:
            h.remove()
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            shapes[node.name] = tuple(meta.shape)
    return gm, shapes, watch.float32


def _flatten_like(node, shapes, name) -> Flatten:
    """A reshape/view/flatten node that keeps the batch axis and flattens the rest, as a Flatten."""
    src = node.args[0]
    s_in, s_out = shapes.get(src.name), shapes.get(node.name)
    if s_in is None or s_out is None or len(s_out) != 2 or s_out[0] != s_in[0]:
        raise TwinError(f"verify: your forward's {name} reshapes {s_in} to {s_out}; the twin "
                        "expresses only a flatten to (N, features)")
    return Flatten(start_dim=1, dtype=np.float64)


def _function_op(node, shapes) -> Optional[Module]:
    """The module for a call_function / call_method node; None when it is not a tensor op."""
    t, name = node.target, node.name
    d = np.float64
    if t in (F.relu, torch.relu, "relu", "relu_", torch.relu_):
        return ReLU(dtype=d)
    if t in (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"):
        return _Add()
    if t in (torch.flatten, "flatten", "view", "reshape", torch.reshape):
        return _flatten_like(node, shapes, name)
    if t in (F.max_pool2d, F.avg_pool2d):
        # F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices);
        # F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
        names = (("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
                 if t is F.max_pool2d else
                 ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                  "divisor_override"))
        given = dict(zip(names, node.args[1:]))
        given.update(node.kwargs)
        k, s, p = given.get("kernel_size"), given.get("stride"), given.get("padding", 0)
        expected = dict(dilation=1, ceil_mode=False, return_indices=False, count_include_pad=True,
                        divisor_override=None)
        for key, ok in expected.items():
            value = given.get(key, ok)
            value = value[0] if isinstance(value, (tuple, list)) and len(set(value)) == 1 else value
            if key in given and value != ok:
                raise TwinError(f"verify: your forward's {name} ({t.__name__}) has {key}="
                                f"{given[key]!r}; the twin has {ok!r} only")
        cls = MaxPool2d if t is F.max_pool2d else AvgPool2d
        return cls(k, stride=s or None, padding=p, dtype=d)
    if t in (F.adaptive_avg_pool2d,):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise TwinError(f"verify: your forward's {name} pools to {size!r}; the twin pools to 1x1 only")
        return AdaptiveAvgPool2d(1, dtype=d)
    if t in (F.dropout,):
        p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
        if p != 0:
            raise TwinError(f"verify: your forward's {name} (F.dropout, p={p}) drops at random, "
                            "which no twin can reproduce; verify with p=0")
        return _Identity()
    if t in ("contiguous", "clone", "float", "double", "to"):
        return _Identity()
    return None


def _is_final_log_softmax(node) -> bool:
    """log_softmax over the classes whose result is the forward's output itself."""
    if node.target not in (F.log_softmax, torch.log_softmax, "log_softmax"):
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    users = list(node.users)
    return dim in (1, -1) and len(users) == 1 and users[0].op == "output"


def twin_from_torch(model: nn.Module, x: torch.Tensor, method: str,
                    float32_masks: Optional[bool] = None):
    """The dfbst_np twin of ``model``, and what its probe found.

    Parameters
    ----------
    model : torch.nn.Module
        The user's model (float64); not changed (a copy is traced).
    x : torch.Tensor
        One input batch.
    method : {"dfbst", "dst", "dense"}
    float32_masks : bool, optional
        Force the twin's mask dtype; None: per masked layer, float32 where
        its forward made float32 tensors.

    Returns
    -------
    (TracedTwin, {masked layer name: float32 seen in its forward})

    Raises
    ------
    TwinError
        Naming the module or operation the twin cannot express.
    """
    gm, shapes, seen32 = _probe(model, x)
    modules = dict(model.named_modules())
    twin = TracedTwin()
    called = set()
    placeholder = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if placeholder is not None:
                raise TwinError("verify: your model's forward takes more than one input; the twin "
                                "takes the images only")
            placeholder = node.name
            object.__setattr__(twin, "input", node.name)
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node) or out.name not in shapes:
                raise TwinError("verify: your model's forward must return the logits tensor only")
            object.__setattr__(twin, "output", out.name)
            continue
        if node.op == "get_attr":
            raise TwinError(f"verify: your forward reads the tensor {node.target!r} directly; the "
                            "twin only runs modules on activations")
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node) and a.name in shapes]
        if node.op == "call_module":
            target = str(node.target)
            torch_module = modules[target]
            first = tensor_args[0].name if tensor_args else None
            mod = _translate(torch_module, target, method,
                             (shapes.get(first), shapes.get(node.name)),
                             bool(seen32.get(target, False)) if float32_masks is None else float32_masks)
            if target in called:
                if list(torch_module.parameters(recurse=False)) or list(torch_module.buffers(recurse=False)):
                    raise TwinError(f"verify: your forward calls {target} ({type(torch_module).__name__}) "
                                    "twice; the twin runs a layer with parameters once per step")
                twin.add_unnamed(mod)       # a stateless module reused (one ReLU for all)
            else:
                called.add(target)
                twin.place(target, mod)
            twin.ops.append((mod, [first], node.name))
            continue
        if node.name not in shapes:
            continue            # shapes and sizes (x.shape[0]): only read by a reshape
        if _is_final_log_softmax(node):
            object.__setattr__(twin, "output_log_softmax", True)
            twin.ops.append((_Identity(), [tensor_args[0].name], node.name))
            continue
        mod = _function_op(node, shapes)
        target = getattr(node.target, "__name__", node.target)
        if mod is None:
            raise TwinError(f"verify: your forward's operation {target!r} (node {node.name}) has no "
                            "dfbst_np twin; the twin adds residuals and applies relu, pooling, "
                            "flatten and reshape to (N, -1)")
        inputs = [a.name for a in tensor_args]
        if isinstance(mod, _Add):
            if len(inputs) != 2:
                raise TwinError(f"verify: your forward's {node.name} adds a constant; the twin adds "
                                "two activations only (a residual connection)")
        else:
            inputs = inputs[:1]
        twin.add_unnamed(mod)
        twin.ops.append((mod, inputs, node.name))
    mine = set(twin.state_dict())
    theirs = set(model.state_dict())
    # masks kept as buffers are compared in the mask stage, not carried by the twin
    missed = sorted(k for k in theirs - mine if not k.endswith((".mask", ".dmask")))
    if missed:
        raise TwinError(f"verify: your forward never uses {missed[0]} (of {len(missed)} such "
                        "entries); the twin runs what the forward runs")
    return twin, {k: bool(v) for k, v in seen32.items()}
