"""Gradient-based weight saliency masks, reusable by any gradient method.

The saliency of a weight is the magnitude of the forget loss's gradient at the original model; the mask keeps the
top fraction of weights, ranked globally across tensors (Fan et al., "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency", ICLR 2024). The pieces compose with any optimiser loop:

>>> mask = SaliencyMask.from_saliency(saliency, ratio=0.5)      # doctest: +SKIP
>>> loss.backward(); mask.mask_gradients(model)                 # doctest: +SKIP
>>> before = mask.snapshot(model); optimizer.step()             # doctest: +SKIP
>>> mask.restore(model, before, optimizer)                      # doctest: +SKIP

so that a masked gradient ascent (or finetune) moves only the salient weights, as :class:`~lightning_unlearn.methods.
SalUn` does for random-label training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

SELECTIONS: tuple[str, ...] = ("topk", "threshold")
MASK_FORMAT_VERSION = 1


def forget_gradient_sum(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Gradient of the summed cross-entropy of one batch with respect to every trainable parameter, by name.

    Parameters the loss does not reach get zeros. The model is not stepped and ``.grad`` is left untouched
    (``torch.autograd.grad``), so under DDP no gradient synchronisation takes place.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if len(x) == 0:
        return {n: torch.zeros_like(p) for n, p in named}
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(named, grads, strict=True)}


def saliency_mask(
    saliency: Mapping[str, Tensor], ratio: float, *, selection: str = "topk"
) -> tuple[dict[str, Tensor], float]:
    """Boolean masks keeping the most salient fraction ``ratio`` of all entries, ranked globally across tensors.

    ``k = int(N * ratio)`` over the ``N`` entries of all tensors, in the mapping's order. ``"topk"`` keeps exactly
    ``k`` entries, ties at rank ``k`` going to the earlier flat index (a stable sort); ``"threshold"`` keeps every
    entry ``>=`` the ``k``-th largest value (all ties, possibly more than ``k``).

    Returns:
        The masks by name and the threshold (the saliency at rank ``k``).

    Raises:
        ValueError: If ``ratio`` is not in (0, 1] or ``selection`` is unknown.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    names = list(saliency)
    flat = torch.cat([saliency[n].reshape(-1).to(torch.float64) for n in names])
    k = max(int(flat.numel() * ratio), 1)
    order = torch.argsort(-flat, stable=True)
    threshold = float(flat[order[k - 1]])
    if selection == "topk":
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[order[:k]] = True
    else:
        keep = flat >= threshold
    parts = torch.split(keep, [saliency[n].numel() for n in names])
    return {n: part.view_as(saliency[n]) for n, part in zip(names, parts, strict=True)}, threshold


def _buffer_name(name: str) -> str:
    return name.replace(".", "__")


class SaliencyMask(nn.Module):
    """Persistent boolean masks over a classifier's parameters (``True``: the weight may change).

    A non-trainable module: its buffers travel with any checkpoint of the module holding it and load with
    ``weights_only=True``. Build it empty for a model (:meth:`for_model`, all ``True`` and ``ready`` False), fill
    it from a saliency (:meth:`fill`), then use :meth:`mask_gradients`, :meth:`snapshot` and :meth:`restore`
    around any optimiser step.

    Args:
        shapes: Parameter name to shape, in ``named_parameters`` order.
    """

    ready: Tensor

    def __init__(self, shapes: Mapping[str, torch.Size | tuple[int, ...]]) -> None:
        super().__init__()
        self.names = list(shapes)
        for name, shape in shapes.items():
            self.register_buffer(_buffer_name(name), torch.ones(shape, dtype=torch.bool))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @classmethod
    def for_model(cls, model: nn.Module) -> SaliencyMask:
        """An all-``True`` (not yet computed) mask over ``model``'s trainable parameters."""
        return cls({n: p.shape for n, p in model.named_parameters() if p.requires_grad})

    @classmethod
    def from_saliency(cls, saliency: Mapping[str, Tensor], ratio: float, *, selection: str = "topk") -> SaliencyMask:
        """A ready mask from a saliency (see :func:`saliency_mask`)."""
        mask = cls({n: s.shape for n, s in saliency.items()})
        mask.fill(saliency_mask(saliency, ratio, selection=selection)[0])
        return mask

    def get(self, name: str) -> Tensor:
        """The boolean mask of parameter ``name``."""
        value: Tensor = getattr(self, _buffer_name(name))
        return value

    def items(self) -> list[tuple[str, Tensor]]:
        """``(parameter name, mask)`` pairs in parameter order."""
        return [(n, self.get(n)) for n in self.names]

    def fill(self, masks: Mapping[str, Tensor]) -> None:
        """Set the masks (0/1 integers are cast to bool) and mark the mask ready.

        Raises:
            ValueError: If a parameter is missing from ``masks``, an extra one is given, or a shape differs.
        """
        missing = [n for n in self.names if n not in masks]
        extra = [n for n in masks if n not in self.names]
        if missing or extra:
            raise ValueError(f"mask keys do not match the model's parameters: missing {missing}, unexpected {extra}")
        for name in self.names:
            value, target = masks[name], self.get(name)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"mask of {name!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value.to(target.device) != 0)
        self.ready.fill_(True)

    def num_selected(self) -> int:
        """Number of ``True`` entries."""
        return int(sum(int(m.sum()) for _, m in self.items()))

    def num_entries(self) -> int:
        """Number of entries over all masked parameters."""
        return int(sum(m.numel() for _, m in self.items()))

    def _params(self, model: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
        params = dict(model.named_parameters())
        return [(params[n], m) for n, m in self.items() if n in params]

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        """Zero the gradients of masked-out entries (``grad <- grad * mask``)."""
        for p, m in self._params(model):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def snapshot(self, model: nn.Module) -> list[Tensor]:
        """Copies of the masked parameters, to pass to :meth:`restore` after the optimiser step."""
        return [p.detach().clone() for p, _ in self._params(model)]

    @torch.no_grad()
    def restore(self, model: nn.Module, before: list[Tensor], optimizer: Optimizer | Any | None = None) -> None:
        """Put masked-out entries back to their values in ``before`` and zero their optimiser momentum.

        Weight decay and momentum would otherwise move masked-out weights although their gradient is zero; after
        this call they stay bitwise at their values before the step (the original weights, by induction).
        """
        optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap Lightning's optimiser wrapper
        state = getattr(optimizer, "state", {})
        for (p, m), old in zip(self._params(model), before, strict=True):
            p.copy_(torch.where(m, p, old))
            buf = state.get(p, {}).get("momentum_buffer") if isinstance(state, Mapping) else None
            if isinstance(buf, Tensor):
                buf.mul_(m)

    def save(self, path: str | Path, **meta: Any) -> None:
        """Write ``{"format_version", **meta, "k", "num_params", "mask": {name: bool tensor}}`` to ``path``."""
        payload = {
            "format_version": MASK_FORMAT_VERSION,
            **meta,
            "k": self.num_selected(),
            "num_params": self.num_entries(),
            "mask": {n: m.detach().cpu().clone() for n, m in self.items()},
        }
        torch.save(payload, str(path))

    @staticmethod
    def read(path: str | Path) -> dict[str, Tensor]:
        """Masks by name from a file written by :meth:`save` or a plain ``{name: 0/1 tensor}`` dict.

        Names are cleaned as classifier checkpoints are (``model.``, ``module.`` and ``_orig_mod.`` prefixes
        stripped).
        """
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
        masks = payload.get("mask", payload) if isinstance(payload, Mapping) else None
        if not isinstance(masks, Mapping):
            raise ValueError(f"{path}: expected a mask file (a dict of tensors, or one with a 'mask' entry)")
        out: dict[str, Tensor] = {}
        for name, value in masks.items():
            clean = str(name)
            for prefix in ("module.", "_orig_mod.", "model."):
                while clean.startswith(prefix):
                    clean = clean[len(prefix) :]
            out[clean] = torch.as_tensor(value)
        return out


def parameter_shapes(params: Iterable[tuple[str, Tensor]]) -> dict[str, torch.Size]:
    """Name to shape of named tensors (helper for building a :class:`SaliencyMask`)."""
    return {n: p.shape for n, p in params}
