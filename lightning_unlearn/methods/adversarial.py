"""Targeted L2 PGD and L2UL's adversarial set, as pure, generator-seeded functions.

The attack works on pixels in ``clip_range`` (normally ``[0, 1]``); the classifier normalises its input itself, so
gradients flow through its ``Normalize`` layer and nothing normalised is ever clipped.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TargetMode = Literal["corrected", "reference"]
TARGET_MODES: tuple[str, ...] = ("corrected", "reference")
#: Target the reference sampler substitutes on a collision with the true label.
REFERENCE_COLLISION_TARGET = 5

__all__ = ["TARGET_MODES", "generate_adversarial_set", "l2_pgd_targeted", "sample_adversarial_targets"]


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm over all elements of each sample, shaped for broadcasting against ``t``."""
    norm = t.flatten(1).norm(p=2, dim=1)
    return norm.view(-1, *([1] * (t.dim() - 1)))


def _project(delta: Tensor, eps: float) -> Tensor:
    """Scale each sample's ``delta`` by ``min(1, eps / ||delta||)`` (0 stays 0)."""
    factor = torch.clamp(eps / _per_sample_norm(delta).clamp_min(1e-12), max=1.0)
    return delta * factor


def l2_pgd_targeted(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    eps: float,
    step: float,
    iters: int,
    rand_init: bool = True,
    clip_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Targeted L2 projected gradient descent (advertorch 0.2.3 ``L2PGDAttack(targeted=True)`` semantics).

    Per iteration: ``g = -grad_delta sum_i CE(f(x_i + delta_i), t_i)``, normalised per sample
    (``g / max(||g||, 1e-6)``), ``delta += step * g``, then the range clip and the L2-ball projection. The random
    start is ``u ~ U[lo, hi]``, ``delta = u - x`` projected onto the ball and clipped. No momentum, no early exit.
    The model is used as given (call it in eval mode); only ``delta`` receives gradients, so no ``.grad`` is left
    on the model's parameters.

    Args:
        model: Classifier mapping pixels to logits.
        x: Clean inputs ``B x ...`` in ``clip_range``.
        target: Target class of each input (``B``).
        eps: L2 radius (> 0).
        step: Step size ``alpha`` (> 0).
        iters: Number of iterations (>= 0).
        rand_init: Start from a random point of the box projected onto the ball; ``False``: start at ``x``.
        clip_range: Pixel range ``(lo, hi)``.
        generator: CPU generator of the random start (``None``: the global RNG).

    Returns:
        The adversarial inputs, detached, with ``||x_adv - x|| <= eps`` per sample and values in ``clip_range``.
    """
    if eps <= 0 or step <= 0 or iters < 0:
        raise ValueError(f"l2_pgd_targeted needs eps > 0, step > 0 and iters >= 0, got {eps}, {step}, {iters}")
    lo, hi = float(clip_range[0]), float(clip_range[1])
    if not lo < hi:
        raise ValueError(f"clip_range must be (lo, hi) with lo < hi, got {clip_range!r}")
    x = x.detach()
    target = target.to(device=x.device, dtype=torch.long)
    if rand_init:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * (hi - lo) + lo
        delta = _project(u - x, eps)
        delta = torch.clamp(x + delta, lo, hi) - x
    else:
        delta = torch.zeros_like(x)
    for _ in range(iters):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x + delta), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        g = -grad
        g = g / torch.clamp(_per_sample_norm(g), min=1e-6)
        delta = delta.detach() + step * g
        delta = torch.clamp(x + delta, lo, hi) - x
        delta = _project(delta, eps)
    return torch.clamp(x + delta.detach(), lo, hi)


def sample_adversarial_targets(
    y: Tensor,
    num_classes: int,
    mode: TargetMode = "corrected",
    target_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Attack targets for labels ``y``.

    * ``"corrected"``: uniform over ``{0..C-1} \ {y}`` with ``C = target_classes or num_classes``.
    * ``"reference"``: ``floor(U[0,1) * C)``; a collision ``t == y`` becomes 5, which may equal ``y`` (the
      authors' runnable code uses ``C = 10`` for every dataset).

    Args:
        y: True labels (any device); targets are returned on the same device.
        num_classes: Number of classes of the classifier.
        mode: ``"corrected"`` or ``"reference"``.
        target_classes: Classes targets are drawn from (``<= num_classes``); ``None``: ``num_classes``.
        generator: CPU generator of the draw.

    Returns:
        Int64 targets shaped like ``y``.
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"mode must be one of {TARGET_MODES}, got {mode!r}")
    classes = num_classes if target_classes is None else int(target_classes)
    if not 2 <= classes <= num_classes:
        raise ValueError(f"target_classes must be in [2, num_classes={num_classes}], got {target_classes!r}")
    y_cpu = y.detach().to("cpu", torch.long)
    if mode == "corrected":
        if bool((y_cpu >= classes).any()):
            # a label outside the target range: its "other classes" are all of them
            t = torch.randint(0, classes, y_cpu.shape, generator=generator)
            inside = y_cpu < classes
            shifted = torch.randint(0, classes - 1, y_cpu.shape, generator=generator)
            shifted = shifted + (shifted >= y_cpu).long()
            t = torch.where(inside, shifted, t)
        else:
            t = torch.randint(0, classes - 1, y_cpu.shape, generator=generator)
            t = t + (t >= y_cpu).long()
    else:
        if num_classes <= REFERENCE_COLLISION_TARGET:
            raise ValueError(
                f"the reference target sampler replaces collisions by class {REFERENCE_COLLISION_TARGET}; it needs "
                f"num_classes > {REFERENCE_COLLISION_TARGET}, got {num_classes} (use mode='corrected')"
            )
        u = torch.rand(y_cpu.shape, generator=generator)
        t = torch.floor(u * classes).long()
        t = torch.where(t == y_cpu, torch.full_like(t, REFERENCE_COLLISION_TARGET), t)
    return t.to(y.device)


def generate_adversarial_set(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    num_adv_per_instance: int,
    batch_size: int,
    eps: float,
    step: float = 0.1,
    iters: int = 100,
    rand_init: bool = True,
    clip_range: tuple[float, float] = (0.0, 1.0),
    target_mode: TargetMode = "corrected",
    target_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """L2UL's adversarial set, repeat-major: ``N_adv`` passes over the forget batches in order.

    Each pass draws targets for every forget batch (size ``batch_size``, last partial batch kept), attacks it with
    :func:`l2_pgd_targeted` and appends the examples in batch order, each labelled with its target (success is
    never checked). The model runs in eval mode (its mode is restored afterwards).

    Args:
        model: Classifier at the start of the request.
        x: Forget inputs ``k x ...`` in loader order.
        y: Their labels (``k``).
        num_classes: Number of classes.
        num_adv_per_instance: ``N_adv`` (>= 1).
        batch_size: Forget batch size of the pass.
        eps: L2 radius.
        step: PGD step size.
        iters: PGD iterations.
        rand_init: Random start of PGD.
        clip_range: Pixel range.
        target_mode: Target sampler mode, see :func:`sample_adversarial_targets`.
        target_classes: Classes targets are drawn from (``None``: all).
        generator: CPU generator of targets and random starts (draws: per batch, targets then start).

    Returns:
        ``(x_adv, y_adv, source_index)`` with ``k * N_adv`` rows; ``source_index`` is the forget position of each
        example's clean input.
    """
    if num_adv_per_instance < 1 or batch_size < 1:
        raise ValueError(f"num_adv_per_instance and batch_size must be >= 1, got {num_adv_per_instance}, {batch_size}")
    k = x.shape[0]
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    src: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for _ in range(num_adv_per_instance):
            for start in range(0, k, batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                t = sample_adversarial_targets(yb, num_classes, target_mode, target_classes, generator)
                xs.append(l2_pgd_targeted(model, xb, t, eps, step, iters, rand_init, clip_range, generator))
                ys.append(t)
                src.append(torch.arange(start, start + xb.shape[0], device=x.device))
    finally:
        model.train(was_training)
    return torch.cat(xs), torch.cat(ys), torch.cat(src)
