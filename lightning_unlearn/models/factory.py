"""Architecture registry, ``load_classifier`` (the typed factory used in configs) and ``export_classifier``.

``load_classifier`` builds a registered architecture and, given a checkpoint, loads it with
``torch.load(..., weights_only=True)`` only. It reads the formats of the seed papers' code and of the library:
a raw ``state_dict``, a dict holding a ``state_dict`` entry (Lightning ``.ckpt``, SalUn), keys prefixed by a
wrapper (``module.`` for DDP, ``_orig_mod.`` for ``torch.compile``, ``model.`` for a LightningModule, possibly
beside other submodules such as a frozen teacher) and the weiaicunzai ResNet-18 names of SSD / JiT / L2UL.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_unlearn.errors import load_error_reason
from lightning_unlearn.models.base import ClassifierBase
from lightning_unlearn.models.laf import LAFCNN, LAFResNet18, _pair
from lightning_unlearn.models.resnet import CifarResNet18, CifarResNet50, ResNet18MaxPool
from lightning_unlearn.models.tiny import TinyCNN
from lightning_unlearn.models.vgg import VGG16BN, JiTVGG11

#: Architecture id -> classifier class (the builder). ``cifar_resnet18`` is the default for 32x32 RGB.
ARCHITECTURES: dict[str, type[ClassifierBase]] = {
    "laf_cnn": LAFCNN,
    "laf_resnet18": LAFResNet18,
    "cifar_resnet18": CifarResNet18,
    "resnet18_maxpool": ResNet18MaxPool,
    "cifar_resnet50": CifarResNet50,
    "jit_vgg11": JiTVGG11,
    "vgg16_bn": VGG16BN,
    "tiny_cnn": TinyCNN,
}

_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")
_NORMALIZE_PREFIX = "normalize."
_MAX_LISTED = 20


def build_classifier(
    arch: str,
    num_classes: int,
    *,
    in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_norm: bool = False,
) -> ClassifierBase:
    """Build a freshly initialised classifier of a registered architecture (see :func:`load_classifier`).

    Raises:
        ValueError: On an unknown ``arch``, invalid arguments, or ``batch_norm=True`` for an architecture
            without that option.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; allowed values: {sorted(ARCHITECTURES)}")
    builder = ARCHITECTURES[arch]
    accepted = inspect.signature(builder).parameters
    kwargs: dict[str, object] = {"num_classes": num_classes, "mean": mean, "std": std}
    if in_channels is None and mean is not None:
        in_channels = len(mean)
    if in_channels is None and std is not None:
        in_channels = len(std)
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    if input_size is not None:
        _pair(input_size)  # validates the format even where the network is size-agnostic
        if "input_size" in accepted:
            kwargs["input_size"] = input_size
    if batch_norm:
        if "batch_norm" not in accepted:
            with_bn = sorted(a for a, b in ARCHITECTURES.items() if "batch_norm" in inspect.signature(b).parameters)
            raise ValueError(f"arch {arch!r} has no batch_norm option; architectures with it: {with_bn}")
        kwargs["batch_norm"] = True
    return builder(**kwargs)  # type: ignore[arg-type]


def load_classifier(
    arch: str,
    num_classes: int,
    ckpt_path: str | None = None,
    *,
    in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    strict: bool = True,
    batch_norm: bool = False,
) -> nn.Module:
    """Build a classifier and optionally load its weights; usable as a ``class_path`` in LightningCLI YAML.

    Example::

        model:
          class_path: lightning_unlearn.models.load_classifier
          init_args: {arch: cifar_resnet18, num_classes: 10, ckpt_path: original.ckpt}

    Loading:

    1. ``torch.load(ckpt_path, map_location="cpu", weights_only=True)``; anything that needs arbitrary code to
       unpickle is refused. A ``state_dict`` entry is used when present.
    2. Candidate key sets, first exact match (ignoring ``normalize.*`` and BatchNorm ``num_batches_tracked``)
       wins: the keys as saved; after repeatedly stripping a prefix shared by every key (``module.``,
       ``_orig_mod.``, ``model.``); the keys under ``model.`` when other submodules sit beside it (a Lightning
       checkpoint of a method with a teacher); for ``cifar_resnet18``, the weiaicunzai names mapped
       (``conv1.0`` -> ``conv1``, ``conv{k}_x.{i}.residual_function.{0,1,3,4}`` ->
       ``layer{k-1}.{i}.{conv1,bn1,conv2,bn2}``, ``fc`` -> ``linear``, ...).
    3. ``normalize.mean/std``: absent from the file -> the constructor's values; present and ``mean``/``std``
       not given -> the file's values; present and different from given values -> ``ValueError``.
    4. Shape mismatches raise ``ValueError``. With ``strict=False`` the best candidate is loaded and missing and
       unexpected keys are reported in a warning; with ``strict=True`` they raise.

    Args:
        arch: Architecture id, one of :data:`ARCHITECTURES` (``laf_cnn``, ``laf_resnet18``, ``cifar_resnet18``,
            ``resnet18_maxpool``, ``cifar_resnet50``, ``jit_vgg11``, ``vgg16_bn``, ``tiny_cnn``).
        num_classes: Number of classes.
        ckpt_path: Checkpoint to load; ``None`` returns a freshly initialised network.
        in_channels: Input channels; ``None`` uses ``len(mean)`` if given, else the architecture's default.
        input_size: Input height/width for architectures whose flatten size depends on it (``laf_cnn``); the
            others use adaptive pooling and ignore it.
        mean: Per-channel input mean (pixels in [0, 1]), or ``None``.
        std: Per-channel input std, or ``None``.
        strict: Require the checkpoint's keys to match the network's exactly.
        batch_norm: BatchNorm option of ``tiny_cnn``.

    Returns:
        The classifier (an ``nn.Module`` with ``normalize``, ``head_name``, ``forward_features``,
        ``forward_head``, ``embedding_dim`` and ``num_classes``).

    Raises:
        ValueError: On an unknown ``arch``, invalid arguments, a refused, truncated or corrupt checkpoint, no
            usable state dict, shape mismatches, conflicting normalisation, or (``strict``) key mismatches.
        FileNotFoundError: If ``ckpt_path`` does not exist.
    """
    model = build_classifier(
        arch,
        num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
        batch_norm=batch_norm,
    )
    if ckpt_path is None:
        return model
    state = _read_state_dict(ckpt_path)
    _load_into(
        model, arch, state, os.fspath(ckpt_path), mean_given=mean is not None, std_given=std is not None, strict=strict
    )
    return model


def export_classifier(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model.state_dict()`` (tensors moved to CPU) to ``path`` with ``torch.save``, atomically.

    The file is written beside ``path`` and renamed into place, so readers never see a partial file. Missing
    parent directories are created. The result loads with :func:`load_classifier`.

    Args:
        model: The classifier to export.
        path: Destination file (conventionally ``.pt``).

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def load_weights(model: nn.Module, ckpt_path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load a checkpoint into any ``nn.Module`` (yours, torchvision's, timm's) and return it; usable in YAML.

    The file is read with ``torch.load(weights_only=True)`` like :func:`load_classifier`, and the key set that
    matches the module's exactly is used: as saved, after stripping wrapper prefixes shared by every key
    (``module.``, ``_orig_mod.``, ``model.``), or the keys under ``model.`` of a Lightning checkpoint of a method.
    BatchNorm ``num_batches_tracked`` entries may be absent. Example (a torchvision ResNet-18 with your weights as
    a method's classifier)::

        model:
          class_path: lightning_unlearn.models.load_weights
          init_args:
            model: {class_path: torchvision.models.resnet18, init_args: {num_classes: 10}}
            ckpt_path: original.pt

    Args:
        model: The module to fill (its architecture must match the file's).
        ckpt_path: A raw state dict (``torch.save(model.state_dict())``, :func:`export_classifier`) or a Lightning
            checkpoint.
        strict: Refuse a file whose key set does not match exactly (``False``: load the matching tensors and warn).

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is refused (not tensors only), corrupt, or does not match the module.
    """
    state = _read_state_dict(ckpt_path)
    target = model.state_dict()
    wanted = _core(target)
    candidates = _candidates("", state)
    chosen = next(((d, c) for d, c in candidates if _core(c) == wanted), None)
    name = type(model).__name__
    if chosen is None:
        desc, cand = max(candidates, key=lambda dc: (len(_core(dc[1]) & wanted), -len(_core(dc[1]) - wanted)))
        message = (
            f"checkpoint {ckpt_path} does not match {name} (closest key set: {desc}); missing keys "
            f"{_listing(wanted - _core(cand))}; unexpected keys {_listing(set(cand) - set(target))}"
        )
        if strict:
            raise ValueError(message + ". Pass strict=False to load the matching tensors anyway.")
        warnings.warn(message + "; loaded the matching tensors only.", UserWarning, stacklevel=2)
    else:
        desc, cand = chosen
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs {name} {tuple(target[k].shape)}"
        for k, v in cand.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(f"checkpoint {ckpt_path} does not fit {name} ({desc}): {'; '.join(mismatched)}")
    merged = dict(target)
    merged.update({k: v for k, v in cand.items() if k in target})
    model.load_state_dict(merged, strict=True)
    return model


# --------------------------------------------------------------------------------------------------- reading


def _read_state_dict(ckpt_path: str | os.PathLike[str]) -> dict[str, Tensor]:
    path = Path(os.fspath(ckpt_path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"checkpoint path is a directory, expected a file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise ValueError(
                f"refused to load {path}: it contains objects that torch.load(weights_only=True) does not allow, "
                "and unpickling them could run arbitrary code. Only tensors and plain containers are accepted; "
                "re-save the weights with torch.save(model.state_dict(), path) (or export_classifier) from a "
                f"trusted environment. Details: {_refusal_reason(err)}"
            ) from err
        raise ValueError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({err})") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise ValueError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({err})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict (a mapping of parameter names "
            "to tensors) or a dict with a 'state_dict' entry"
        )
    non_tensors = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if non_tensors:
        raise ValueError(
            f"checkpoint {path} is not a state dict: entries {_listing(non_tensors)} are not tensors keyed by "
            "name (expected a mapping of parameter names to tensors, or a dict with a 'state_dict' entry)"
        )
    if not obj:
        raise ValueError(f"checkpoint {path} holds an empty state dict")
    return dict(obj)


def _refusal_reason(err: Exception) -> str:
    """The informative line(s) of torch's weights-only error (the unsupported global), without its advice."""
    return load_error_reason(err)


# --------------------------------------------------------------------------------------------------- key sets


def _strip_prefixes(desc: str, state: dict[str, Tensor]) -> list[tuple[str, dict[str, Tensor]]]:
    """Repeatedly strip a wrapper prefix shared by every key; return each intermediate key set."""
    out: list[tuple[str, dict[str, Tensor]]] = []
    while state:
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                desc = f"{desc}, '{prefix}' stripped"
                out.append((desc, state))
                break
        else:
            break
    return out


_BLOCK_PARTS = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}
_RESIDUAL = re.compile(r"^conv([2-5])_x\.(\d+)\.residual_function\.([0134])\.(.+)$")
_SHORTCUT = re.compile(r"^conv([2-5])_x\.(\d+)\.shortcut\.([01])\.(.+)$")
_STEM = {"conv1.0.": "conv1.", "conv1.1.": "bn1.", "fc.": "linear."}


def _weiaicunzai_name(key: str) -> str:
    """Map one weiaicunzai/pytorch-cifar100 ResNet-18 key to its ``cifar_resnet18`` name (unknown keys kept)."""
    if match := _RESIDUAL.match(key):
        stage, block, part, rest = match.groups()
        return f"layer{int(stage) - 1}.{block}.{_BLOCK_PARTS[part]}.{rest}"
    if match := _SHORTCUT.match(key):
        stage, block, part, rest = match.groups()
        return f"layer{int(stage) - 1}.{block}.shortcut.{part}.{rest}"
    for old, new in _STEM.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _weiaicunzai_to_cifar_resnet18(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename weiaicunzai/pytorch-cifar100 ResNet-18 keys (SSD, JiT, L2UL) to ``cifar_resnet18`` names."""
    return {_weiaicunzai_name(k): v for k, v in state.items()}


def _candidates(arch: str, state: dict[str, Tensor]) -> list[tuple[str, dict[str, Tensor]]]:
    cands: list[tuple[str, dict[str, Tensor]]] = [("keys as saved", state)]
    cands += _strip_prefixes("keys as saved", state)
    for desc, cand in list(cands):
        under_model = {k[len("model.") :]: v for k, v in cand.items() if k.startswith("model.")}
        if under_model and len(under_model) < len(cand):
            sub_desc = f"{desc}, keys under 'model.'"
            cands.append((sub_desc, under_model))
            cands += _strip_prefixes(sub_desc, under_model)
    if arch == "cifar_resnet18":
        for desc, cand in list(cands):
            remapped = _weiaicunzai_to_cifar_resnet18(cand)
            if remapped.keys() != cand.keys():
                cands.append((f"{desc}, weiaicunzai names mapped", remapped))
    return cands


def _core(keys: object) -> set[str]:
    """Keys that must match: everything except ``normalize.*`` and BatchNorm ``num_batches_tracked``."""
    return {
        k
        for k in keys  # type: ignore[attr-defined]
        if not k.startswith(_NORMALIZE_PREFIX) and not k.endswith("num_batches_tracked")
    }


def _listing(keys: Sequence[str] | set[str]) -> str:
    items = sorted(keys)
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


# --------------------------------------------------------------------------------------------------- loading


def _load_into(
    model: ClassifierBase,
    arch: str,
    state: dict[str, Tensor],
    source: str,
    *,
    mean_given: bool,
    std_given: bool,
    strict: bool,
) -> None:
    target = model.state_dict()
    wanted = _core(target)
    cands = _candidates(arch, state)
    chosen = next(((d, c) for d, c in cands if _core(c) == wanted), None)
    exact = chosen is not None
    if chosen is None:
        chosen = max(cands, key=lambda dc: (len(_core(dc[1]) & wanted), -len(_core(dc[1]) - wanted)))
    desc, cand = chosen

    missing = wanted - _core(cand)
    unexpected = {k for k in cand if k not in target}
    mismatched = [
        f"{k}: checkpoint {tuple(cand[k].shape)} vs {arch} {tuple(target[k].shape)}"
        for k in cand
        if k in target and cand[k].shape != target[k].shape
    ]
    shapes = f"tensor shapes differ: {'; '.join(mismatched)}" if mismatched else ""
    if not exact and strict:
        raise ValueError(
            f"checkpoint {source} does not match {arch} (closest key set: {desc}); missing keys "
            f"{_listing(missing)}; unexpected keys {_listing(unexpected)}"
            + (f"; {shapes}" if shapes else "")
            + ". Pass strict=False to load the matching tensors anyway."
        )
    if mismatched:
        raise ValueError(
            f"checkpoint {source} does not fit {arch}(num_classes={model.num_classes}, "
            f"in_channels={model.in_channels}) ({desc}); {shapes}. Check num_classes, in_channels and input_size."
        )

    conflicts = []
    for stat, given in (("mean", mean_given), ("std", std_given)):
        key = f"{_NORMALIZE_PREFIX}{stat}"
        if given and key in cand and not torch.allclose(cand[key].float(), target[key], rtol=1e-5, atol=1e-6):
            conflicts.append(
                f"{key} in the checkpoint is {tuple(round(v, 6) for v in cand[key].tolist())} but {stat}="
                f"{tuple(round(v, 6) for v in target[key].tolist())} was given"
            )
    if conflicts:
        raise ValueError(
            f"normalisation of checkpoint {source} differs from the arguments: {'; '.join(conflicts)}. "
            "Omit mean/std to use the checkpoint's values, or pass the values it was trained with."
        )
    if not exact:
        warnings.warn(
            f"checkpoint {source} does not match {arch} (closest key set: {desc}); missing keys "
            f"{_listing(missing)}; unexpected keys {_listing(unexpected)}; loaded the matching tensors only.",
            UserWarning,
            stacklevel=3,
        )

    merged = dict(target)
    merged.update({k: v for k, v in cand.items() if k in target})
    model.load_state_dict(merged, strict=True)
