"""``python -m dfbst_np verify``: import a user's model and step, run :func:`~.verifier.verify`.

``--model MODULE_OR_FILE:FACTORY`` names a function that takes no argument
and returns the torch model; ``--step MODULE_OR_FILE:FACTORY`` a function
that takes the model and returns ``step(model, x, y, epoch, index)``, or a
pair ``(step, end_epoch)``. MODULE_OR_FILE is a ``.py`` file (its folder is
put on ``sys.path`` so it can import its neighbours) or an importable
module name. The batches are the committed Fashion-MNIST sample's first
images, one batch per step, in float64 (channels repeated and zero-padded
centrally to ``--input-shape``).

Exit status: 0 when the code agrees, 1 when it diverges, 2 when the input is
wrong (a missing file, a factory that does not exist or has the wrong
signature, a checkpoint that does not fit, names that do not match): then
one line on stderr, no traceback.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable, Tuple

import numpy as np

from ..errors import DfbstError


class UserInputError(DfbstError, ValueError):
    """A flag of ``verify`` points at something unusable; the message names the flag."""


def _where(exc: BaseException) -> str:
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_file(path: Path, source: str, flag: str):
    """The module of the file ``path``, imported once under its own name.

    The file's folder goes first on ``sys.path`` and the file is imported by
    its module name, as ``python file.py``'s neighbours import each other: a
    ``--step`` file that does ``import my_model`` and a ``--model my_model.py``
    then share one module, so the user's classes (and their isinstance
    checks) are the same objects. A name taken by another file falls back to
    a private name, registered in ``sys.modules`` so it is loaded only once.
    """
    path = path.resolve()
    folder, name = str(path.parent), path.stem
    if folder not in sys.path:
        sys.path.insert(0, folder)
    existing = sys.modules.get(name)
    same = existing is not None and getattr(existing, "__file__", None) \
        and Path(existing.__file__).resolve() == path
    if same:
        return existing
    if existing is not None or not name.isidentifier():
        name = f"_dfbst_verify_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
    spec_obj = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec_obj)
    sys.modules[name] = module          # before running it: the file may import itself
    try:
        spec_obj.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise UserInputError(f"{flag}: importing {source} raised {type(e).__name__}: "
                             f"{e}{_where(e)}") from e
    return module


def load_factory(spec: str, flag: str) -> Callable:
    """The callable named by ``MODULE_OR_FILE:FACTORY``; UserInputError naming ``flag`` otherwise."""
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise UserInputError(f"{flag} expects MODULE_OR_FILE:FACTORY, got {spec!r}")
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"{flag}: no such file {source!r}")
        module = _import_file(path, source, flag)
    else:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as e:
            if e.name and source.startswith(e.name):
                raise UserInputError(f"{flag}: no module named {source!r} (and no file of that name)") from e
            raise UserInputError(f"{flag}: importing {source} raised ModuleNotFoundError: {e}{_where(e)}") from e
        except Exception as e:
            raise UserInputError(f"{flag}: importing {source} raised {type(e).__name__}: "
                                 f"{e}{_where(e)}") from e
    factory = getattr(module, attr, None)
    if factory is None:
        raise UserInputError(f"{flag}: {source} has no {attr!r}")
    if not callable(factory):
        raise UserInputError(f"{flag}: {source}:{attr} is a {type(factory).__name__}, not a function")
    return factory


def _call(factory: Callable, args: tuple, flag: str, expected: str):
    try:
        inspect.signature(factory).bind(*args)
    except TypeError:
        raise UserInputError(f"{flag}: {getattr(factory, '__name__', factory)}"
                             f"{inspect.signature(factory)} must be callable as {expected}") from None
    except ValueError:    # a builtin without a signature: just try it
        pass
    try:
        return factory(*args)
    except Exception as e:
        raise UserInputError(f"{flag}: {expected} raised {type(e).__name__}: {e}{_where(e)}") from e


def make_model(spec: str, checkpoint=None):
    """Build the user's model (float64) and load ``checkpoint`` into it (weights_only)."""
    import torch
    import torch.nn as nn
    from .convert import load_checkpoint, to_torch_state_dict

    model = _call(load_factory(spec, "--model"), (), "--model", "FACTORY()")
    if not isinstance(model, nn.Module):
        raise UserInputError(f"--model: the factory returned a {type(model).__name__}, "
                             "not a torch.nn.Module")
    # verification runs in float64 (SPEC section 7); the CLI owns this model
    model = model.to(torch.float64)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UserInputError(f"--checkpoint: no such file {str(checkpoint)!r}")
        try:
            state = load_checkpoint(checkpoint)
            model.load_state_dict(to_torch_state_dict(state, like=model))
        except (KeyError, ValueError, RuntimeError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise UserInputError(f"--checkpoint {checkpoint}: {msg}") from e
        except Exception as e:    # torch.load refusing a file (weights_only) or a corrupt one
            raise UserInputError(f"--checkpoint {checkpoint}: cannot read it as a weights-only "
                                 f"torch file ({type(e).__name__}: {e})") from e
    return model


def make_step(spec: str, model) -> Tuple[Callable, Callable]:
    """The user's ``step`` (and ``end_epoch`` or None) from the step factory."""
    made = _call(load_factory(spec, "--step"), (model,), "--step", "FACTORY(model)")
    end_epoch = None
    if isinstance(made, tuple):
        if len(made) != 2:
            raise UserInputError(f"--step: the factory returned a tuple of {len(made)}; "
                                 "expected step or (step, end_epoch)")
        made, end_epoch = made
    if not callable(made) or (end_epoch is not None and not callable(end_epoch)):
        raise UserInputError("--step: the factory must return step(model, x, y, epoch, index) "
                             "or (step, end_epoch), functions")
    try:
        inspect.signature(made).bind(model, None, None, 1, 0)
    except TypeError:
        raise UserInputError(f"--step: the step function{inspect.signature(made)} must be "
                             "callable as step(model, x, y, epoch, index)") from None
    except ValueError:
        pass
    return made, end_epoch


def parse_schedule(text: str):
    """``"1:0,1:1,2:0"`` -> [(1, 0), (1, 1), (2, 0)]."""
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise UserInputError(f"--schedule expects EPOCH:INDEX,EPOCH:INDEX,..., got {text!r}")
    return pairs


def sample_batches(n_batches: int, batch_size: int, shape) -> list:
    """``n_batches`` batches of the committed sample, float64, shaped (C, H, W)."""
    from ..train.data import load_dataset

    data = load_dataset("sample", train=True)
    c, h, w = shape
    images, labels = data.images, data.labels
    if h < images.shape[2] or w < images.shape[3]:
        raise UserInputError(f"--input-shape {c},{h},{w}: H and W must be at least the sample's "
                             f"{images.shape[2]}x{images.shape[3]}")
    need = n_batches * batch_size
    if need > len(images):
        raise UserInputError(f"--batch-size {batch_size} x {n_batches} steps needs {need} images; "
                             f"the sample has {len(images)}")
    top, left = (h - images.shape[2]) // 2, (w - images.shape[3]) // 2
    x = np.zeros((need, c, h, w))
    x[:, :, top:top + images.shape[2], left:left + images.shape[3]] = images[:need]
    return [(x[k * batch_size:(k + 1) * batch_size], labels[k * batch_size:(k + 1) * batch_size])
            for k in range(n_batches)]


#: The images verify may hold at once (float64): 512 MiB.
MAX_INPUT_BYTES = 512 * 2 ** 20


def _number(value, flag: str, positive: bool = False):
    """``value`` if finite and >= 0 (> 0 if ``positive``); UserInputError naming ``flag``."""
    if value is None:
        return None
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise UserInputError(f"{flag} expects a finite number {'> 0' if positive else '>= 0'}, "
                             f"got {value!r}")
    return value


def parse_input_shape(text: str, batch_size: int, n_batches: int):
    """``"C,H,W"`` -> (C, H, W), checked against what the batches would weigh."""
    try:
        shape = tuple(int(v) for v in text.split(","))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError
    except ValueError:
        raise UserInputError(f"--input-shape expects C,H,W (three integers >= 1), got {text!r}") from None
    size = 8 * batch_size * n_batches * int(np.prod(shape, dtype=object))
    if size > MAX_INPUT_BYTES:
        raise UserInputError(f"--input-shape {text} with --batch-size {batch_size} x {n_batches} "
                             f"steps needs {size / 2 ** 20:.0f} MiB of float64 images; at most "
                             f"{MAX_INPUT_BYTES // 2 ** 20} MiB")
    return shape


def parse_name_map(text):
    """``"net.0=fc1,net="`` (or a .json file of the same mapping) -> dict; None for None."""
    if text is None:
        return None
    if text.endswith(".json"):
        import json
        path = Path(text)
        if not path.is_file():
            raise UserInputError(f"--name-map: no such file {text!r}")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserInputError(f"--name-map {text}: not a JSON object ({e})") from None
        if not (isinstance(mapping, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in mapping.items())):
            raise UserInputError(f"--name-map {text}: expected a JSON object of names to names")
        return mapping
    mapping = {}
    for item in text.split(","):
        yours, sep, ours = item.partition("=")
        if not sep or not yours.strip():
            raise UserInputError(f"--name-map expects YOURS=OURS,... (OURS may be empty to strip a "
                                 f"prefix), got {item!r}")
        mapping[yours.strip()] = ours.strip()
    return mapping


def run_cli(args) -> int:
    """The ``verify`` command; returns the exit status."""
    from .verifier import VerifyError, default_settings, verify

    try:
        if args.batch_size < 1:
            raise UserInputError(f"--batch-size expects an integer >= 1, got {args.batch_size}")
        rtol = _number(args.rtol, "--rtol")
        atol = _number(args.atol, "--atol")
        for key in ("lr", "momentum", "weight_decay", "alpha", "beta"):
            _number(getattr(args, key), "--" + key.replace("_", "-"))
        clip = args.clip_norm
        if clip is not None:
            try:
                clip = None if clip.lower() == "none" else float(clip)
            except ValueError:
                raise UserInputError(f"--clip-norm expects a number or 'none', got {clip!r}") from None
            _number(clip, "--clip-norm", positive=True)
        schedule = parse_schedule(args.schedule)
        shape = parse_input_shape(args.input_shape, args.batch_size, len(schedule))
        name_map = parse_name_map(getattr(args, "name_map", None))
        f32 = {"auto": None, "on": True, "off": False}[getattr(args, "float32_masks", "auto")]
        batches = sample_batches(len(schedule), args.batch_size, shape)
        model = make_model(args.model, args.checkpoint)
        step, end_epoch = make_step(args.step, model)
        settings = default_settings(args.method)
        for key in ("lr", "momentum", "weight_decay", "alpha", "beta"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)
        if args.clip_norm is not None:
            settings["clip_norm"] = clip
        report = verify(model, step, batches, method=args.method, settings=settings,
                        schedule=schedule, stress=args.stress, end_epoch=end_epoch,
                        rtol=rtol, atol=atol, name_map=name_map, float32_masks=f32,
                        audience="cli")
    except (UserInputError, VerifyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report if getattr(args, "table", False) else report.headline())
    if not getattr(args, "table", False):
        print(f"({len(report.rows)} comparisons; --table prints them all)")
    return 0 if report.ok else 1
