"""Shared mechanisms of the "Forget with Precision" family.

* :func:`change_mask` (least-changed weights per tensor, linear-interpolated quantile without
  ``torch.quantile``'s 2^24-element limit) and :func:`reinit` (Kaiming-normal fan-in redraw of masked entries);
* :func:`stage_sgd`: the per-stage ``SGD(momentum 0.9, Nesterov, weight decay 5e-4)`` builder;
* random labels drawn once from the method's seeded generator (:class:`_RandomLabels`);
* :class:`PrecisionStage` and the multi-stage base of the family (overfit copies as registered submodules,
  in the checkpoint until the edit, then freed).

Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
Unlearning Approaches", Deep Learning course project, ETH Zürich, 2023.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.datamodules.samplers import global_batch_share
from lightning_unlearn.methods.base import (
    MultiStageUnlearningMethod,
    OptimizerCallable,
    Stage,
    check_choice,
)
from lightning_unlearn.methods.random_labels import draw_label_offsets
from lightning_unlearn.models.cut import detect_num_classes, resolve_head_name
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_integer, check_sgd

Preset = Literal["corrected", "reference"]
PRESETS: tuple[str, ...] = ("corrected", "reference")
StageData = Literal["retain", "forget", "poisoned_forget", "retain+poisoned_forget", "retain_sample", "stats"]
StageTarget = Literal["model", "copy_forget", "copy_retain"]

LABEL_SEED_OFFSET = 0
PRUNE_SEED_OFFSET = 1
ACTRESET_SEED_OFFSET = 2


# ----------------------------------------------------------------------------------------------------- functions
def linear_quantile(values: Tensor, q: float) -> Tensor:
    """Quantile ``q`` of all entries of ``values`` with linear interpolation, as ``torch.quantile`` computes it.

    Works for any size (``torch.quantile`` refuses more than 2^24 elements): sorts once and interpolates between
    the order statistics at ``floor(q (n - 1))`` and ``ceil(q (n - 1))``.

    Args:
        values: Any non-empty tensor (flattened).
        q: Quantile in ``[0, 1]``.
    """
    flat = values.flatten()
    n = flat.numel()
    if n == 0:
        raise ValueError("linear_quantile needs a non-empty tensor")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    ordered = flat.sort().values
    # as torch.quantile: q in the input dtype, ranks in double precision, weight back in the input dtype
    rank = float(torch.tensor(q, dtype=flat.dtype)) * (n - 1)
    below = math.floor(rank)
    above = min(math.ceil(rank), n - 1)
    weight = torch.tensor(rank - below, dtype=flat.dtype, device=flat.device)
    return torch.lerp(ordered[below], ordered[above], weight)


def change_mask(w_orig: Tensor, w_copy: Tensor, q: float) -> Tensor:
    """Boolean mask of the least-changed entries: ``|w_orig - w_copy| < quantile(|w_orig - w_copy|, q)``.

    The comparison is strict, so an entry equal to the threshold is kept and an all-zero difference gives an
    empty mask.

    Args:
        w_orig: The original tensor.
        w_copy: The same tensor after training a copy.
        q: Quantile in ``(0, 1)``.
    """
    if w_orig.shape != w_copy.shape:
        raise ValueError(f"change_mask: shapes differ, {tuple(w_orig.shape)} vs {tuple(w_copy.shape)}")
    d = (w_orig.detach() - w_copy.detach()).abs()
    return d < linear_quantile(d, q)


def kaiming_draw(w: Tensor, generator: torch.Generator) -> Tensor:
    """A fresh CPU tensor shaped like ``w`` from ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``.

    ``std = sqrt(2 / fan_in)``, ``fan_in = w.shape[1] * prod(w.shape[2:])`` (PyTorch's convention). Drawn on the
    CPU from ``generator`` so every rank and device draws the same numbers; the caller moves it.
    """
    if w.dim() < 2:
        raise ValueError(f"kaiming_draw needs a tensor with >= 2 dimensions, got shape {tuple(w.shape)}")
    fan_in = w.shape[1] * math.prod(w.shape[2:])
    std = math.sqrt(2.0 / fan_in)
    return torch.empty(w.shape, dtype=torch.float32).normal_(0.0, std, generator=generator)


@torch.no_grad()
def reinit(w: Tensor, mask: Tensor, generator: torch.Generator) -> int:
    """Replace ``w[mask]`` in place by a fresh full-shape Kaiming draw (drawn even when the mask is empty).

    Returns:
        The number of entries replaced.
    """
    fresh = kaiming_draw(w, generator).to(device=w.device, dtype=w.dtype)
    mask = mask.to(w.device)
    w[mask] = fresh[mask]
    return int(mask.sum())


def stage_sgd(
    params: Iterable[Any],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    factory: OptimizerCallable | None = None,
) -> Optimizer:
    """A new optimiser for one stage: ``factory(params)`` when given (its own lr wins), else SGD from the args."""
    params = list(params)
    if factory is not None:
        return factory(params)
    groups: Any = params if params else [{"params": []}]
    return torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0
    )


def flag_channels(a_forget: Tensor, a_retain: Tensor, toll: float) -> Tensor:
    """Channels whose forget mean exceeds the retain mean at more than ``toll * H * W`` positions (both strict).

    Args:
        a_forget: Mean raw conv output over the forget set, ``C x H x W``.
        a_retain: Mean raw conv output over the retain sample, ``C x H x W``.
        toll: Fraction in ``(0, 1)``.

    Returns:
        Boolean ``C`` vector of flagged channels.
    """
    count = (a_forget > a_retain).flatten(1).sum(1)
    positions = a_forget[0].numel()
    return count > toll * positions


def activation_layers(model: nn.Module, layers: str = "all_conv", head_name: str | None = None) -> list[str]:
    """Qualified names of the conv layers ActivationReset hooks.

    ``"all_conv"``: every ``nn.Conv2d`` outside the head; ``"name_conv"`` (reference): those whose qualified
    name contains ``conv`` (on the CIFAR ResNet-18 this skips the 3 shortcut convs).
    """
    check_choice("layers", layers, ("all_conv", "name_conv"))
    head = resolve_head_name(model, head_name)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or name == head or name.startswith(head + "."):
            continue
        if layers == "name_conv" and "conv" not in name:
            continue
        names.append(name)
    return names


def _resolve(value: Any, preset: str, corrected: Any, reference: Any) -> Any:
    if value is not None:
        return value
    return reference if preset == "reference" else corrected


def _check_epochs(name: str, value: int) -> None:
    check_integer(name, value)


def _check_common(preset: str, momentum: float, weight_decay: float, **lrs: float) -> None:
    check_choice("preset", preset, PRESETS)
    check_sgd(momentum, weight_decay, **lrs)


def _num_classes(model: nn.Module, head_name: str | None = None) -> int:
    return detect_num_classes(model, head_name)


# ----------------------------------------------------------------------------------------------------- mixins
class _RandomLabels:
    """Random forget labels drawn once from the method's seeded generator (persistent buffer ``poison_draws``).

    Default: uniform over all classes (true class included, ≈ 1/C keep their label); with
    ``exclude_true_label`` a uniform offset in ``[1, C)`` is added to the true label.
    """

    poison_draws: Tensor
    num_classes: int
    hparams: Any
    device: torch.device
    trainer: Any
    _trainer: Any

    def _seed_value(self) -> int:
        seed = self.hparams.get("seed")
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return int(seed)

    def _generator(self, offset: int) -> torch.Generator:
        return seeded_generator(self._seed_value(), offset)

    def _exclude(self) -> bool:
        return bool(self.hparams.get("exclude_true_label", False))

    def draw_labels(self, size: int) -> None:
        """Draw the per-sample random labels (or offsets) of ``size`` forget samples."""
        g = self._generator(LABEL_SEED_OFFSET)
        draws = draw_label_offsets(size, self.num_classes, g, exclude_true=self._exclude())
        self.poison_draws = draws.to(self.device)

    def _ensure_labels(self) -> None:
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "forget_indices", None) is None:
            raise RuntimeError(f"{type(self).__name__} needs an UnlearningDataModule (it reads the forget-set size)")
        size = len(datamodule.forget_indices)
        if self.poison_draws.numel() != size:
            self.draw_labels(size)

    def poisoned_labels(self, index: Tensor, y: Tensor | None = None) -> Tensor:
        """Random labels of the forget samples at split positions ``index``."""
        draws = self.poison_draws.to(index.device)[index]
        if self._exclude():
            if y is None:
                raise RuntimeError("exclude_true_label needs labelled forget batches")
            return (y + draws) % self.num_classes
        return draws

    def _resize_label_buffer(self, state_dict: Mapping[str, Any]) -> None:
        draws = state_dict.get("poison_draws")
        if draws is not None:
            self.poison_draws = torch.empty_like(draws)


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(1) == y).float().mean()


# ----------------------------------------------------------------------------------------------------- gradient
# ----------------------------------------------------------------------------------------------------- multi-stage
@dataclass(frozen=True)
class PrecisionStage:
    """Declaration of one stage of the family: what data, which network trains, lr, schedule, shuffle."""

    name: str
    epochs: int
    data: StageData
    trains: StageTarget | None
    lr: float = 0.0
    schedule: Literal["constant", "cosine", "multistep"] = "constant"
    shuffle: bool = True
    global_batches: bool = False


class _PrecisionMultiStage(_RandomLabels, MultiStageUnlearningMethod):
    """Shared machinery of the multi-stage methods: stage declarations, per-stage SGD, copies, logging."""

    copy_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, stage_optimizers: dict[str, OptimizerCallable | None] | None = None) -> None:
        self._stage_optimizers = dict(stage_optimizers or {})
        super().__init__(model)
        self.head_name: str = resolve_head_name(model, self.hparams.get("head_name"))
        self.num_classes = _num_classes(model, self.head_name)
        self.register_buffer("poison_draws", torch.zeros(0, dtype=torch.long))
        self._retain_size: int | None = None
        self._datamodule_sample: int | None = None
        for name in self.copy_names:
            copied = copy.deepcopy(model)
            for p in copied.parameters():
                p.requires_grad_(True)
            self.add_module(name, copied)

    # ---------------------------------------------------------------- declarations
    def precision_stages(self) -> list[PrecisionStage]:
        """The ordered stage declarations."""
        raise NotImplementedError

    def sample_size(self) -> int | None:
        """Size of the retain sample ``S`` (``None`` until the retain size is known)."""
        h = self.hparams
        if h.get("retain_sample_size") is not None:
            return int(h["retain_sample_size"])
        if "retain_fraction" not in h or self._retain_size is None:
            return None
        return max(1, math.floor(float(h["retain_fraction"]) * self._retain_size))

    def _phase(self, spec: PrecisionStage) -> Phase:
        epochs = max(1, spec.epochs)
        if spec.data == "retain":
            return Phase(epochs, splits=("retain",), labelled=True, shuffle=spec.shuffle)
        if spec.data == "forget":
            return Phase(
                epochs, splits=("forget",), labelled=True, shuffle=spec.shuffle, global_batches=spec.global_batches
            )
        if spec.data == "poisoned_forget":
            return Phase(epochs, splits=("forget",), labelled=True, with_index=True, shuffle=spec.shuffle)
        if spec.data == "retain_sample":
            return Phase(
                epochs,
                splits=("retain_sample",),
                labelled=True,
                shuffle=spec.shuffle,
                sample_size=self.sample_size(),
                global_batches=spec.global_batches,
            )
        if spec.data == "stats":
            return Phase(
                epochs,
                splits=("forget", "retain_sample"),
                mode="max_size",
                labelled=False,
                shuffle=False,
                sample_size=self.sample_size(),
                unrepeated=True,  # every sample counted once under DDP
            )
        raise ValueError(f"unknown stage data {spec.data!r}")

    def stages(self) -> list[Stage]:
        """Base :class:`Stage` s built from :meth:`precision_stages`."""
        return [Stage(s.name, s.epochs, self._phase(s), trains=s.trains is not None) for s in self.precision_stages()]

    def stage_spec(self, name: str) -> PrecisionStage:
        """The declaration of the stage called ``name``."""
        for spec in self.precision_stages():
            if spec.name == name:
                return spec
        raise KeyError(name)

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Read the retain size (for the retain sample) before the plan is installed; check the sample size."""
        datamodule: Any = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and getattr(datamodule, "retain_indices", None) is not None:
            self._retain_size = len(datamodule.retain_indices)
            size = self.sample_size()
            uses_sample = any(s.data in ("retain_sample", "stats") for s in self.precision_stages() if s.epochs > 0)
            if uses_sample and size is not None and not 1 <= size <= self._retain_size:
                raise ValueError(
                    f"retain sample size must be in [1, {self._retain_size}] (the retain-set size), got {size}"
                )
        super().setup(stage)

    def on_fit_start(self) -> None:
        """Refuse re-runs; draw random labels when a stage poisons the forget set."""
        super().on_fit_start()
        if any(s.data == "poisoned_forget" for s in self.precision_stages() if s.epochs > 0):
            self._ensure_labels()

    # ---------------------------------------------------------------- optimisers
    def _target(self, spec: PrecisionStage) -> nn.Module | None:
        if spec.trains == "model":
            return self.model
        if spec.trains is None:
            return None
        return getattr(self, spec.trains, None)

    def configure_stage_optimizer(self, stage: Stage) -> Optimizer | None:
        """A new SGD(momentum, Nesterov, weight decay) with the stage's lr, over the network the stage trains."""
        spec = self.stage_spec(stage.name)
        target = self._target(spec)
        params = list(target.parameters()) if target is not None else []
        h = self.hparams
        return stage_sgd(
            params, spec.lr, h["momentum"], h["weight_decay"], h["nesterov"], self._stage_optimizers.get(spec.name)
        )

    # ---------------------------------------------------------------- steps
    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """One SGD step of cross-entropy on the stage's data, for the network the stage trains."""
        spec = self.stage_spec(stage.name)
        if spec.trains is None:
            self.statistics_step(spec, batch, batch_idx)
            return None
        network = self._target(spec)
        if network is None:
            raise RuntimeError(f"stage {spec.name!r}: its network was already freed")
        split = "forget" if spec.data in ("forget", "poisoned_forget") else spec.data
        x, y, index = self.labelled_batch(batch[split])
        target = y
        if spec.data == "poisoned_forget":
            if index is None:
                raise RuntimeError("poisoned stages need forget batches with sample indices")
            target = self.poisoned_labels(index, y)
            self.log(
                "poison/true_label_kept_fraction",
                (target == y).float().mean(),
                on_step=False,
                on_epoch=True,
                batch_size=len(y),
            )
        share = self._global_share(stage, len(target))
        if share is None:
            logits = network(x)
            loss = F.cross_entropy(logits, target)
        else:  # this rank's share of the one-process batch, weighted so DDP's average is the global gradient
            positions, weight = share
            x, target = x[positions], target[positions]
            if len(target):
                logits = network(x)
                loss = F.cross_entropy(logits, target, reduction="sum") * weight
            else:  # nothing to learn from here, but the backward pass (and its all-reduce) must still happen
                logits = None
                loss = torch.stack([p.sum() for p in network.parameters()]).sum() * 0.0
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        if logits is not None:
            self.log(
                f"train/{spec.name}/acc",
                _accuracy(logits.detach(), target),
                on_step=False,
                on_epoch=True,
                batch_size=len(target),
            )
        if batch_idx == 0:
            self.log(
                f"lr/{spec.name}", float(optimizer.param_groups[0]["lr"]), on_step=False, on_epoch=True, batch_size=1
            )
        return loss

    def _global_share(self, stage: Stage, batch_size: int) -> tuple[slice, float] | None:
        """This rank's share of a global batch when the stage trains on global batches under DDP, else ``None``."""
        if not stage.phase.global_batches or self._trainer is None or self.trainer.world_size <= 1:
            return None
        return global_batch_share(batch_size, self.trainer.global_rank, self.trainer.world_size)

    def statistics_step(self, spec: PrecisionStage, batch: Any, batch_idx: int) -> None:
        """Forward-only statistics of one batch (ActivationReset)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- copies
    def free_copies(self) -> None:
        """Drop the overfit copies (and their optimisers' parameters and state) after the edit."""
        names = [n for n in self.copy_names if getattr(self, n, None) is not None]
        if not names:
            return
        freed = {id(p) for n in names for p in getattr(self, n).parameters()}
        if self._trainer is not None:
            optimizers: Any = self.optimizers()
            if not isinstance(optimizers, list):
                optimizers = [optimizers]
            for opt in optimizers:
                inner = getattr(opt, "optimizer", opt)
                for group in inner.param_groups:
                    if any(id(p) in freed for p in group["params"]):
                        for p in group["params"]:
                            inner.state.pop(p, None)
                        group["params"] = [p for p in group["params"] if id(p) not in freed]
        for name in names:
            setattr(self, name, None)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Free copies absent from the checkpoint (saved after the edit); resize the random-label table."""
        for name in self.copy_names:
            if getattr(self, name, None) is not None and not any(k.startswith(name + ".") for k in state_dict):
                setattr(self, name, None)
        self._resize_label_buffer(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _log_value(self, name: str, value: float) -> None:
        if self._trainer is not None:
            self.log(name, float(value), on_step=False, on_epoch=True, batch_size=1)


def _stage_optimizers(**kwargs: OptimizerCallable | None) -> dict[str, OptimizerCallable | None]:
    return {k.removesuffix("_optimizer"): v for k, v in kwargs.items()}
