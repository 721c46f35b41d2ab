"""L2UL's forget-set weight importance and its quadratic anchor, as pure functions."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

ImportanceMode = Literal["reference", "mas"]
IMPORTANCE_MODES: tuple[str, ...] = ("reference", "mas")

__all__ = ["IMPORTANCE_MODES", "estimate_forget_importance", "importance_penalty", "normalize_importance"]


def estimate_forget_importance(
    model: nn.Module,
    x: Tensor,
    batch_size: int,
    mode: ImportanceMode = "reference",
    bn_train: bool = True,
    accumulate_grads: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Raw importance ``Omega[p]`` of every trainable parameter for the forget inputs ``x`` (unnormalised).

    Computed on a deep copy of ``model`` (the model itself is untouched, BN running statistics included), over
    batches of ``batch_size`` in the order of ``x``:

    * ``"reference"``: per batch, ``s = mean_i ||f(x_i)||_2`` (unsquared), ``Omega += |ds/dp| * n_b`` (the
      absolute batch-mean gradient). With ``accumulate_grads`` (reference quirk) gradients are not zeroed
      between batches, so batch ``b`` adds ``|g_1 + ... + g_b| * n_b``.
    * ``"mas"``: ``Omega = mean_i |d ||f(x_i)||^2 / dp|`` over single samples (library decision).

    Args:
        model: Classifier at the start of the request.
        x: Forget inputs ``k x ...``.
        batch_size: Batch size of the pass (the forget batch size).
        mode: ``"reference"`` or ``"mas"``.
        bn_train: Run the copy in train mode (BN uses the batch statistics, as the reference does).
        accumulate_grads: Reproduce the reference's gradient accumulation (``"reference"`` mode only).
        generator: CPU generator seeding the pass: when given, the global RNG (CPU, and ``x``'s CUDA device) is
            forked, seeded from one draw of it and restored afterwards, so stochastic layers (dropout) give the same
            importance on every rank and the caller's RNG stream is untouched. ``None``: the global RNG as is.

    Returns:
        ``{parameter name: Omega}`` for every parameter with ``requires_grad``.
    """
    if mode not in IMPORTANCE_MODES:
        raise ValueError(f"mode must be one of {IMPORTANCE_MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        cuda = x.device.type == "cuda"
        devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(devices[0]):
                    torch.cuda.manual_seed(seed)
            return estimate_forget_importance(model, x, batch_size, mode, bn_train, accumulate_grads, None)
    clone = copy.deepcopy(model)
    clone.train(bn_train)
    named = [(n, p) for n, p in clone.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    omega = [torch.zeros_like(p) for p in params]
    running = [torch.zeros_like(p) for p in params]
    k = x.shape[0]
    with torch.enable_grad():
        if mode == "reference":
            for start in range(0, k, batch_size):
                xb = x[start : start + batch_size]
                n_b = xb.shape[0]
                s = clone(xb).flatten(1).norm(p=2, dim=1).mean()
                grads = torch.autograd.grad(s, params, allow_unused=True)
                for i, g in enumerate(grads):
                    g = torch.zeros_like(params[i]) if g is None else g
                    if accumulate_grads:
                        running[i] = running[i] + g
                        g = running[i]
                    omega[i] += g.abs() * n_b
        else:
            for j in range(k):
                s = clone(x[j : j + 1]).pow(2).sum()
                grads = torch.autograd.grad(s, params, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is not None:
                        omega[i] += g.abs() / k
    return {n: o.detach() for (n, _), o in zip(named, omega, strict=True)}


def normalize_importance(raw: Mapping[str, Tensor], eps: float = 1e-12) -> dict[str, Tensor]:
    """Per-tensor inverted min-max normalisation ``1 - (Omega - min) / (max - min)``, guarded against constant tensors.

    ``0`` marks the element most important for the forget set (free to move), ``1`` a fully anchored one. A tensor
    whose range is ``<= eps`` gets all ones (the reference would give NaN).
    """
    out: dict[str, Tensor] = {}
    for name, value in raw.items():
        lo, hi = value.min(), value.max()
        span = hi - lo
        if float(span) <= eps:
            out[name] = torch.ones_like(value)
        else:
            out[name] = 1.0 - (value - lo) / span
    return out


def importance_penalty(model: nn.Module, anchor: Mapping[str, Tensor], omega: Mapping[str, Tensor]) -> Tensor:
    """``L_REG = 1/2 * sum_p sum_elements omega * (theta - theta0)^2`` over the parameters named in ``omega``.

    Its gradient is ``omega * (theta - theta0)``. Parameters missing from ``omega`` are not regularised.
    """
    params = dict(model.named_parameters())
    total: Tensor | None = None
    for name, weight in omega.items():
        p = params[name]
        term = (weight * (p - anchor[name]).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        device = next(iter(params.values())).device if params else torch.device("cpu")
        return torch.zeros((), device=device)
    return 0.5 * total
