"""The "Forget with Precision" method family: label poisoning, weight-change pruning and activation reset.

Shared mechanisms (spec ``precision.md`` §2):

* :func:`change_mask` (least-changed weights per tensor, linear-interpolated quantile without
  ``torch.quantile``'s 2^24-element limit) and :func:`reinit` (Kaiming-normal fan-in redraw of masked entries);
* :func:`stage_sgd`: the per-stage ``SGD(momentum 0.9, Nesterov, weight decay 5e-4)`` builder;
* random labels drawn once from the method's seeded generator (:class:`_RandomLabels`);
* overfit copies of the classifier as registered submodules (in the checkpoint until the edit, then freed).

``Finetune`` of the family is :class:`lightning_unlearn.methods.Finetune` (``baselines.py``).

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
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    MultiStageUnlearningMethod,
    OptimizerCallable,
    Stage,
    check_choice,
    check_positive,
)
from lightning_unlearn.models.cut import final_linear, resolve_head_name

Preset = Literal["corrected", "reference"]
PRESETS: tuple[str, ...] = ("corrected", "reference")
StageData = Literal["retain", "forget", "poisoned_forget", "retain+poisoned_forget", "retain_sample", "stats"]
StageTarget = Literal["model", "copy_forget", "copy_retain"]

LABEL_SEED_OFFSET = 0
PRUNE_SEED_OFFSET = 1
ACTRESET_SEED_OFFSET = 2

__all__ = [
    "ActivationReset",
    "Hybrid",
    "Poison",
    "PoisonFull",
    "PrecisionStage",
    "Pruning",
    "PruningComplex",
    "PruningLast",
    "activation_layers",
    "change_mask",
    "flag_channels",
    "kaiming_draw",
    "linear_quantile",
    "reinit",
    "stage_sgd",
]


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
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _check_common(preset: str, momentum: float, weight_decay: float, **lrs: float) -> None:
    check_choice("preset", preset, PRESETS)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    check_positive("weight_decay", weight_decay, allow_zero=True)
    for name, lr in lrs.items():
        check_positive(name, lr, allow_zero=True)


def _num_classes(model: nn.Module) -> int:
    classes = getattr(model, "num_classes", None)
    if not isinstance(classes, int) or classes < 2:
        try:
            classes = final_linear(model).out_features
        except ValueError:
            classes = None
    if not isinstance(classes, int) or classes < 2:
        raise ValueError("the classifier needs a `num_classes` attribute (>= 2) or a head ending in nn.Linear")
    return classes


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
        return torch.Generator().manual_seed(self._seed_value() + offset)

    def _exclude(self) -> bool:
        return bool(self.hparams.get("exclude_true_label", False))

    def draw_labels(self, size: int) -> None:
        """Draw the per-sample random labels (or offsets) of ``size`` forget samples."""
        g = self._generator(LABEL_SEED_OFFSET)
        if self._exclude():
            draws = torch.randint(1, self.num_classes, (size,), generator=g)
        else:
            draws = torch.randint(0, self.num_classes, (size,), generator=g)
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
class _PoisonBase(_RandomLabels, GradientUnlearningMethod):
    """Shared code of :class:`Poison` and :class:`PoisonFull`."""

    stage_label: str = "poison"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        self.num_classes = _num_classes(model)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.register_buffer("poison_draws", torch.zeros(0, dtype=torch.long))

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD(lr, momentum 0.9, Nesterov, weight decay 5e-4) from the hyperparameters."""
        h = self.hparams
        return stage_sgd(params, h["lr"], h["momentum"], h["weight_decay"], h["nesterov"])

    def _check_epochs(self, max_epochs: int) -> None:
        epochs = int(self.hparams["epochs"])
        if max_epochs != epochs:
            raise ValueError(
                f"{type(self).__name__} runs epochs={epochs}; set trainer.max_epochs={epochs} (got {max_epochs})"
            )

    def on_fit_start(self) -> None:
        """Draw the random labels once (kept when restored from a checkpoint)."""
        super().on_fit_start()
        self._ensure_labels()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose label table differs in length from the empty placeholder."""
        self._resize_label_buffer(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _log_step(self, loss: Tensor, logits: Tensor, y: Tensor, kept: Tensor | None, batch_idx: int) -> None:
        name = self.stage_label
        n = len(y)
        self.log(f"train/{name}/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log(f"train/{name}/acc", _accuracy(logits.detach(), y), on_step=False, on_epoch=True, batch_size=n)
        if kept is not None and kept.numel():
            self.log(
                "poison/true_label_kept_fraction",
                kept.float().mean(),
                on_step=False,
                on_epoch=True,
                batch_size=int(kept.numel()),
            )
        if batch_idx == 0:
            optimizer: Any = self.optimizers()
            lr = float(optimizer.param_groups[0]["lr"])
            self.log(f"lr/{name}", lr, on_step=False, on_epoch=True, batch_size=1)


class Poison(_PoisonBase):
    """Train the forget set on random labels drawn once: the "Poison" method of "Forget with Precision".

    Regime: gradient (automatic optimisation), one stage ``poison``: the forget set with fixed random labels
    (uniform over all classes, true class included), ``epochs`` passes (default 1: ⌈|F|/128⌉ steps), SGD lr 7e-4,
    momentum 0.9, Nesterov, weight decay 5e-4, constant lr, shuffled. No retain data. Splits: ``forget`` with
    sample indices; labels are read only for the ``poison/true_label_kept_fraction`` diagnostic (and
    ``exclude_true_label``). Set ``trainer.max_epochs = epochs``.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``poison(lr=0.0007, epochs=1)``).

    Args:
        model: The trained classifier to unlearn.
        lr: Learning rate.
        epochs: Number of passes over the forget set (must equal ``trainer.max_epochs``).
        exclude_true_label: Draw labels among the wrong classes only (library extension; default False).
        seed: Seed of the random labels; ``None``: the run's global seed (``seed_everything``), else 0.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (coupled L2).
        nesterov: Nesterov momentum.
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
    """

    train_splits = ("forget",)
    stage_label = "poison"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 7e-4,
        epochs: int = 1,
        exclude_true_label: bool = False,
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        _check_common("corrected", momentum, weight_decay, lr=lr)
        _check_epochs("epochs", epochs)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """The labelled forget set with sample indices, shuffled."""
        self._check_epochs(max_epochs)
        return [Phase(epochs=max(1, max_epochs), splits=("forget",), labelled=True, with_index=True)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy of a forget batch against its random labels."""
        x, y, index = self.labelled_batch(batch["forget"])
        if index is None:
            raise RuntimeError("Poison needs forget batches with sample indices")
        target = self.poisoned_labels(index, y)
        logits = self(x)
        loss = F.cross_entropy(logits, target)
        self._log_step(loss, logits, target, target == y, batch_idx)
        return loss


class PoisonFull(_PoisonBase):
    """Train the union of the retain set and the random-labelled forget set, with a cosine schedule.

    Regime: gradient (automatic optimisation), one stage ``poison_full``: ``retain + forget`` (one loader over
    the union, forget samples with fixed random labels), ``epochs`` passes, SGD lr 2e-3, momentum 0.9, Nesterov,
    weight decay 5e-4, ``CosineAnnealingLR(T_max=epochs, eta_min=0)`` stepped per epoch. Splits: labelled
    ``retain`` and ``forget`` (with union positions). Set ``trainer.max_epochs = epochs``.

    Quirk (``preset="reference"``): Q5, the union is iterated unshuffled (retain in index order, then every
    poisoned sample: each epoch ends with ⌈|F|/128⌉ poisoned-only steps); corrected: shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``poison_full(lr=0.002, epochs=5)``).

    Args:
        model: The trained classifier to unlearn.
        lr: Initial learning rate.
        epochs: Number of passes over the union (must equal ``trainer.max_epochs``).
        schedule: ``"cosine"`` (reference) or ``"constant"``.
        shuffle: Shuffle the union (Q5); ``None`` follows the preset.
        exclude_true_label: Draw labels among the wrong classes only (default False).
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the random labels; ``None``: the run's global seed.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        nesterov: Nesterov momentum.
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Scheduler factory replacing the schedule given by ``schedule``.
    """

    train_splits = ("retain", "forget")
    stage_label = "poison_full"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2e-3,
        epochs: int = 5,
        schedule: Literal["cosine", "constant"] = "cosine",
        shuffle: bool | None = None,
        exclude_true_label: bool = False,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, lr=lr)
        _check_epochs("epochs", epochs)
        check_choice("schedule", schedule, ("cosine", "constant"))
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.shuffle: bool = bool(_resolve(shuffle, preset, True, False))
        self._retain_size = 0

    def setup(self, stage: str) -> None:
        """Read the retain-set size (forget samples follow it in the union)."""
        datamodule: Any = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "retain_indices"):
            self._retain_size = len(datamodule.retain_indices)
        super().setup(stage)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One loader over ``retain+forget`` with union positions."""
        self._check_epochs(max_epochs)
        return [
            Phase(
                epochs=max(1, max_epochs),
                splits=("retain+forget",),
                labelled=True,
                with_index=True,
                shuffle=self.shuffle,
            )
        ]

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD plus the per-epoch cosine schedule (unless ``schedule="constant"`` or a scheduler is injected)."""
        config = super().configure_optimizers()
        if self._scheduler_factory is not None or self.hparams["schedule"] == "constant":
            return config
        optimizer = config if isinstance(config, Optimizer) else None
        if optimizer is None:
            raise RuntimeError("PoisonFull expects a single optimiser")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.hparams["epochs"])), eta_min=0.0
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy on a union batch, forget samples against their random labels."""
        x, y, index = self.labelled_batch(batch["retain+forget"])
        if index is None:
            raise RuntimeError("PoisonFull needs union batches with sample indices")
        is_forget = index >= self._retain_size
        target = y.clone()
        if bool(is_forget.any()):
            forget_pos = index[is_forget] - self._retain_size
            target[is_forget] = self.poisoned_labels(forget_pos, y[is_forget])
        logits = self(x)
        loss = F.cross_entropy(logits, target)
        self._log_step(loss, logits, target, (target == y)[is_forget], batch_idx)
        return loss


# ----------------------------------------------------------------------------------------------------- multi-stage
@dataclass(frozen=True)
class PrecisionStage:
    """Declaration of one stage of the family (spec §8): what data, which network trains, lr, schedule, shuffle."""

    name: str
    epochs: int
    data: StageData
    trains: StageTarget | None
    lr: float = 0.0
    schedule: Literal["constant", "cosine", "multistep"] = "constant"
    shuffle: bool = True


class _PrecisionMultiStage(_RandomLabels, MultiStageUnlearningMethod):
    """Shared machinery of the multi-stage methods: stage declarations, per-stage SGD, copies, logging."""

    copy_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, stage_optimizers: dict[str, OptimizerCallable | None] | None = None) -> None:
        self.num_classes = _num_classes(model)
        self._stage_optimizers = dict(stage_optimizers or {})
        super().__init__(model)
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
            return Phase(epochs, splits=("forget",), labelled=True, shuffle=spec.shuffle)
        if spec.data == "poisoned_forget":
            return Phase(epochs, splits=("forget",), labelled=True, with_index=True, shuffle=spec.shuffle)
        if spec.data == "retain_sample":
            return Phase(
                epochs, splits=("retain_sample",), labelled=True, shuffle=spec.shuffle, sample_size=self.sample_size()
            )
        if spec.data == "stats":
            return Phase(
                epochs,
                splits=("forget", "retain_sample"),
                mode="max_size",
                labelled=False,
                shuffle=False,
                sample_size=self.sample_size(),
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
        logits = network(x)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        n = len(y)
        self.log(
            f"train/{spec.name}/acc", _accuracy(logits.detach(), target), on_step=False, on_epoch=True, batch_size=n
        )
        if batch_idx == 0:
            self.log(
                f"lr/{spec.name}", float(optimizer.param_groups[0]["lr"]), on_step=False, on_epoch=True, batch_size=1
            )
        return loss

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


class Hybrid(_PrecisionMultiStage):
    """Poison the forget set with random labels, then finetune on the retain set ("Hybrid" / two-stage simple).

    Regime: multi-stage (manual optimisation). Stages: ``poison`` (forget set with fixed random labels,
    ``forget_epochs``, lr ``forget_lr``, shuffled) → ``recover`` (retain set, ``retain_epochs``, lr
    ``retain_lr``, new optimiser). Each stage: SGD momentum 0.9, Nesterov, weight decay 5e-4, constant lr.
    Splits: labelled ``forget`` (with indices) and ``retain``. Set ``trainer.max_epochs = forget_epochs +
    retain_epochs`` and ``reload_dataloaders_every_n_epochs: 1``.

    Quirk (``preset="reference"``): Q4, the retain loader is not shuffled; corrected: shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``two_stage_simple``).

    Args:
        model: The trained classifier to unlearn.
        forget_lr: Learning rate of the poison stage.
        forget_epochs: Epochs of the poison stage.
        retain_lr: Learning rate of the recover stage.
        retain_epochs: Epochs of the recover stage.
        shuffle_retain: Shuffle the retain set (Q4); ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the random labels; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        poison_optimizer: Optimiser factory of the poison stage (its own lr wins).
        recover_optimizer: Optimiser factory of the recover stage.
    """

    def __init__(
        self,
        model: nn.Module,
        forget_lr: float = 1e-2,
        forget_epochs: int = 1,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        poison_optimizer: OptimizerCallable | None = None,
        recover_optimizer: OptimizerCallable | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, forget_lr=forget_lr, retain_lr=retain_lr)
        _check_epochs("forget_epochs", forget_epochs)
        _check_epochs("retain_epochs", retain_epochs)
        super().__init__(
            model, _stage_optimizers(poison_optimizer=poison_optimizer, recover_optimizer=recover_optimizer)
        )
        self.shuffle_retain = bool(_resolve(shuffle_retain, preset, True, False))

    def precision_stages(self) -> list[PrecisionStage]:
        """``poison`` then ``recover``."""
        h = self.hparams
        return [
            PrecisionStage("poison", h["forget_epochs"], "poisoned_forget", "model", h["forget_lr"]),
            PrecisionStage(
                "recover", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]


class _PruningBase(_PrecisionMultiStage):
    """Overfit copies, reset the least-changed weights of eligible tensors, finetune on the retain set."""

    copy_names: tuple[str, ...] = ("copy_forget",)
    copy_forget: nn.Module | None

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float,
        overfit_epochs: int,
        quantile: float,
        retain_lr: float,
        retain_epochs: int,
        shuffle_retain: bool | None,
        preset: str,
        momentum: float,
        weight_decay: float,
        stage_optimizers: dict[str, OptimizerCallable | None],
    ) -> None:
        _check_common(preset, momentum, weight_decay, overfit_lr=overfit_lr, retain_lr=retain_lr)
        _check_epochs("overfit_epochs", overfit_epochs)
        _check_epochs("retain_epochs", retain_epochs)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        super().__init__(model, stage_optimizers)
        self.shuffle_retain = bool(_resolve(shuffle_retain, preset, True, False))
        if not self.eligible_names():
            raise ValueError(f"{type(self).__name__}: the classifier has no eligible tensor (>= 2 dimensions)")

    def eligible_names(self) -> list[str]:
        """Qualified parameter names (of the classifier) the edit may reset: every tensor with >= 2 dims."""
        return [n for n, p in self.model.named_parameters() if p.dim() >= 2]

    def edit_stage_name(self) -> str:
        """The stage after whose end the edit runs."""
        return "overfit_forget"

    def precision_stages(self) -> list[PrecisionStage]:
        """``overfit_forget`` then ``finetune``."""
        h = self.hparams
        return [
            PrecisionStage("overfit_forget", h["overfit_epochs"], "forget", "copy_forget", h["overfit_lr"]),
            PrecisionStage(
                "finetune", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]

    def stage_end(self, stage: Stage) -> None:
        """Apply the edit after the last overfit stage, then free the copies."""
        if stage.name == self.edit_stage_name():
            self.apply_edit()
            self.free_copies()

    def masks(self) -> dict[str, Tensor]:
        """Per eligible tensor, the mask of entries to reset."""
        copies = dict(self._copy_params("copy_forget"))
        q = float(self.hparams["quantile"])
        params = dict(self.model.named_parameters())
        return {n: change_mask(params[n], copies[n], q) for n in self.eligible_names()}

    def _copy_params(self, name: str) -> dict[str, Tensor]:
        network = getattr(self, name, None)
        if network is None:
            raise RuntimeError(f"{type(self).__name__}: copy {name!r} is missing (already freed?)")
        return dict(network.named_parameters())

    @torch.no_grad()
    def apply_edit(self) -> None:
        """Reset the masked entries of every eligible tensor (fresh Kaiming draws, ``named_parameters`` order)."""
        masks = self.masks()
        generator = self._generator(PRUNE_SEED_OFFSET)
        total = reset = 0
        for name, param in self.model.named_parameters():
            if name not in masks:
                continue
            count = reinit(param.data, masks[name], generator)
            reset += count
            total += param.numel()
            self._log_value(f"prune/reset_fraction/{name}", count / param.numel())
        self._log_value("prune/reset_count", reset)
        self._log_value("prune/eligible_count", total)
        self._log_value("prune/reset_fraction", reset / max(1, total))


class Pruning(_PruningBase):
    """Reset, in every weight tensor, the weights that changed least while overfitting a copy on the forget set.

    Regime: multi-stage (manual optimisation). Stages: ``overfit_forget`` (a copy of the classifier, a registered
    submodule, trained on the forget set with its true labels, ``overfit_epochs``, lr ``overfit_lr``, shuffled)
    → edit at the stage's end: for every parameter with >= 2 dimensions, ``reinit(θ, change_mask(θ0, copy,
    quantile))`` (Kaiming-normal fan-in draws from the seeded generator; biases, norm parameters and buffers
    untouched), then the copy is freed → ``finetune`` (retain set, ``retain_epochs``, lr ``retain_lr``). Each stage:
    new SGD, momentum 0.9, Nesterov, weight decay 5e-4, constant lr. Splits: labelled ``forget`` and ``retain``.
    Set ``trainer.max_epochs = overfit_epochs + retain_epochs`` and ``reload_dataloaders_every_n_epochs: 1``.

    Quirk (``preset="reference"``): Q4, the retain loader is not shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (pruning, all layers).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of the overfit copy.
        overfit_epochs: Epochs of the overfit stage.
        quantile: Fraction of each tensor to reset, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        shuffle_retain: Shuffle the retain set (Q4); ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of the overfit stage (its own lr wins).
        finetune_optimizer: Optimiser factory of the finetune stage.
    """

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
    ) -> None:
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(overfit_forget_optimizer=overfit_forget_optimizer, finetune_optimizer=finetune_optimizer),
        )


class PruningLast(_PruningBase):
    """As :class:`Pruning`, but only the weight of the final linear layer may be reset ("Pruning Last").

    The final linear layer is the last ``nn.Linear`` of the classifier's head (Q7: the reference takes the
    second-to-last ``state_dict`` entry, the same tensor on its ResNet-18). The head bias and every other
    parameter and buffer stay bit-identical through the edit.

    Regime, stages, splits, quirks and arguments: as :class:`Pruning`.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``prune_last_layer``).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of the overfit copy.
        overfit_epochs: Epochs of the overfit stage.
        quantile: Fraction of the head weight to reset, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        shuffle_retain: Shuffle the retain set (Q4); ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of the overfit stage (its own lr wins).
        finetune_optimizer: Optimiser factory of the finetune stage.
    """

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
    ) -> None:
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(overfit_forget_optimizer=overfit_forget_optimizer, finetune_optimizer=finetune_optimizer),
        )

    def eligible_names(self) -> list[str]:
        """Only the weight of the final linear layer of the head."""
        weight = final_linear(self.model).weight
        return [n for n, p in self.model.named_parameters() if p is weight]


class PruningComplex(_PruningBase):
    """Reset weights that changed least both when overfitting the forget set and a retain sample.

    Regime: multi-stage (manual optimisation). Stages: ``overfit_forget`` (copy A of θ0 on the forget set, true
    labels, ``overfit_epochs``, lr ``overfit_lr``) → ``overfit_retain_sample`` (copy B of θ0, not of A, on a
    seeded sample S of the retain set of ``retain_sample_size`` or ``floor(retain_fraction * |R|)`` samples,
    ``overfit_epochs``, lr ``retain_overfit_lr``) → edit: for every tensor with >= 2 dims,
    ``reinit(θ, change_mask(θ0, A, q) & change_mask(θ0, B, q))``, copies freed → ``finetune`` (retain set,
    ``retain_epochs``, lr ``retain_lr``). Each stage: new SGD, momentum 0.9, Nesterov, weight decay 5e-4,
    constant lr. Splits: labelled ``forget``, ``retain_sample`` and ``retain``. Set ``trainer.max_epochs =
    2 * overfit_epochs + retain_epochs`` and ``reload_dataloaders_every_n_epochs: 1``.

    Quirks (``preset="reference"``): Q1, copy B trains at ``overfit_lr // 3`` = 0.0, so B never moves, its mask
    is empty and nothing is reset; corrected: ``overfit_lr / 3``. Q4, the retain loader is not shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``selective_pruning_complex``).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of copy A.
        overfit_epochs: Epochs of each overfit stage.
        quantile: Quantile of each change mask, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        retain_overfit_lr: Learning rate of copy B (Q1); ``None``: ``overfit_lr / 3`` (corrected) or
            ``overfit_lr // 3`` (reference).
        retain_fraction: Size of S as a fraction of the retain set, in (0, 1].
        retain_sample_size: Size of S (overrides ``retain_fraction``).
        shuffle_retain: Shuffle the retain set (Q4); ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of copy A's stage (its own lr wins).
        overfit_retain_sample_optimizer: Optimiser factory of copy B's stage.
        finetune_optimizer: Optimiser factory of the finetune stage.
    """

    copy_names = ("copy_forget", "copy_retain")
    copy_retain: nn.Module | None

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        retain_overfit_lr: float | None = None,
        retain_fraction: float = 0.02,
        retain_sample_size: int | None = None,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        overfit_retain_sample_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
    ) -> None:
        if retain_overfit_lr is not None:
            check_positive("retain_overfit_lr", retain_overfit_lr, allow_zero=True)
        if not 0.0 < retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction!r}")
        if retain_sample_size is not None and (isinstance(retain_sample_size, bool) or retain_sample_size < 1):
            raise ValueError(f"retain_sample_size must be an integer >= 1 or None, got {retain_sample_size!r}")
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(
                overfit_forget_optimizer=overfit_forget_optimizer,
                overfit_retain_sample_optimizer=overfit_retain_sample_optimizer,
                finetune_optimizer=finetune_optimizer,
            ),
        )
        self.retain_overfit_lr = float(_resolve(retain_overfit_lr, preset, overfit_lr / 3, overfit_lr // 3))

    def edit_stage_name(self) -> str:
        """The edit runs after copy B's stage."""
        return "overfit_retain_sample"

    def precision_stages(self) -> list[PrecisionStage]:
        """``overfit_forget``, ``overfit_retain_sample``, ``finetune``."""
        h = self.hparams
        return [
            PrecisionStage("overfit_forget", h["overfit_epochs"], "forget", "copy_forget", h["overfit_lr"]),
            PrecisionStage(
                "overfit_retain_sample", h["overfit_epochs"], "retain_sample", "copy_retain", self.retain_overfit_lr
            ),
            PrecisionStage(
                "finetune", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]

    def stage_end(self, stage: Stage) -> None:
        """Edit after the last overfit stage that runs (copy B's, or A's when B has 0 epochs)."""
        active = [s.name for s in self.active_stages()]
        edit_after = "overfit_retain_sample" if "overfit_retain_sample" in active else "overfit_forget"
        if stage.name == edit_after:
            self.apply_edit()
            self.free_copies()

    def masks(self) -> dict[str, Tensor]:
        """``change_mask(θ0, A, q) & change_mask(θ0, B, q)`` per eligible tensor; logs both mask fractions."""
        a = self._copy_params("copy_forget")
        b = self._copy_params("copy_retain")
        q = float(self.hparams["quantile"])
        params = dict(self.model.named_parameters())
        out: dict[str, Tensor] = {}
        n_a = n_b = total = 0
        for name in self.eligible_names():
            mask_a = change_mask(params[name], a[name], q)
            mask_b = change_mask(params[name], b[name], q)
            n_a += int(mask_a.sum())
            n_b += int(mask_b.sum())
            total += mask_a.numel()
            out[name] = mask_a & mask_b
        self._log_value("prune/mask_forget_fraction", n_a / max(1, total))
        self._log_value("prune/mask_retain_fraction", n_b / max(1, total))
        return out


class ActivationReset(_PrecisionMultiStage):
    """Re-initialise conv filters that respond more to the forget set than to a retain sample, reset the head.

    Regime: statistics → edit → finetune (multi-stage, manual optimisation). Stages: ``statistics`` (one
    forward-only epoch, ``trains=False``, unshuffled, inputs only: the forget set and a seeded retain sample S of
    ``retain_sample_size`` or ``floor(retain_fraction * |R|)`` samples; forward hooks on the hooked conv layers
    sum the raw conv outputs; sums and counts reduced across ranks) → edit at its end: per layer, channel ``c`` is
    flagged when ``A_f[c] > A_r[c]`` at more than ``toll * H * W`` positions, its whole filter is replaced by a
    fresh Kaiming-normal draw (BN kept); with ``reset_head`` the whole final linear weight is redrawn (bias kept)
    → ``finetune`` (labelled retain set, ``retain_epochs``, lr ``retain_lr``, new SGD momentum 0.9, Nesterov,
    weight decay 5e-4). Set ``trainer.max_epochs = 1 + retain_epochs`` and
    ``reload_dataloaders_every_n_epochs: 1``.

    Quirks (``preset="reference"``): Q2, the retain sums are divided by |R| instead of |S|; Q3, statistics
    with BN in train mode (running statistics updated); Q4, the retain loader is not shuffled; Q8, only convs
    whose qualified name contains ``conv`` are hooked (skips ResNet shortcut convs).

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``activation_pruning``).

    Args:
        model: The trained classifier to unlearn.
        toll: Fraction of positions, in (0, 1).
        reset_head: Redraw the whole final linear weight (the authors' ``reset_mlp``).
        retain_fraction: Size of S as a fraction of the retain set, in (0, 1].
        retain_sample_size: Size of S (overrides ``retain_fraction``).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        layers: ``"all_conv"`` or ``"name_conv"`` (Q8); ``None`` follows the preset.
        retain_mean_divisor: ``"sample"`` or ``"retain_set"`` (Q2); ``None`` follows the preset.
        stats_bn_mode: ``"eval"`` or ``"train"`` (Q3); ``None`` follows the preset.
        shuffle_retain: Shuffle the retain set (Q4); ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        nesterov: Nesterov momentum.
        finetune_optimizer: Optimiser factory of the finetune stage (its own lr wins).
    """

    def __init__(
        self,
        model: nn.Module,
        toll: float = 0.8,
        reset_head: bool = True,
        retain_fraction: float = 0.02,
        retain_sample_size: int | None = None,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        layers: Literal["all_conv", "name_conv"] | None = None,
        retain_mean_divisor: Literal["sample", "retain_set"] | None = None,
        stats_bn_mode: Literal["eval", "train"] | None = None,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        finetune_optimizer: OptimizerCallable | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, retain_lr=retain_lr)
        _check_epochs("retain_epochs", retain_epochs)
        if not 0.0 < toll < 1.0:
            raise ValueError(f"toll must be in (0, 1), got {toll!r}")
        if not 0.0 < retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction!r}")
        if retain_sample_size is not None and (isinstance(retain_sample_size, bool) or retain_sample_size < 1):
            raise ValueError(f"retain_sample_size must be an integer >= 1 or None, got {retain_sample_size!r}")
        if layers is not None:
            check_choice("layers", layers, ("all_conv", "name_conv"))
        if retain_mean_divisor is not None:
            check_choice("retain_mean_divisor", retain_mean_divisor, ("sample", "retain_set"))
        if stats_bn_mode is not None:
            check_choice("stats_bn_mode", stats_bn_mode, ("eval", "train"))
        super().__init__(model, _stage_optimizers(finetune_optimizer=finetune_optimizer))
        self.layers: str = _resolve(layers, preset, "all_conv", "name_conv")
        self.retain_mean_divisor: str = _resolve(retain_mean_divisor, preset, "sample", "retain_set")
        self.stats_bn_mode: str = _resolve(stats_bn_mode, preset, "eval", "train")
        self.shuffle_retain = bool(_resolve(shuffle_retain, preset, True, False))
        self.layer_names = activation_layers(self.model, self.layers)
        if not self.layer_names and not reset_head:
            raise ValueError(
                "ActivationReset: the classifier has no hooked conv layer for layers="
                f"{self.layers!r} (allowed: 'all_conv', 'name_conv') and reset_head=False: nothing to edit"
            )
        self._sums: dict[str, dict[str, Tensor]] = {}
        self._counts = torch.zeros(2, dtype=torch.float64)

    def precision_stages(self) -> list[PrecisionStage]:
        """``statistics`` then ``finetune``."""
        h = self.hparams
        return [
            PrecisionStage("statistics", 1, "stats", None),
            PrecisionStage(
                "finetune", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]

    def statistics_step(self, spec: PrecisionStage, batch: Any, batch_idx: int) -> None:
        """Sum the raw outputs of the hooked convs over the forget and retain-sample inputs of one batch."""
        if batch_idx == 0:
            self._sums = {"forget": {}, "retain_sample": {}}
            self._counts = torch.zeros(2, dtype=torch.float64)
        was_training = self.model.training
        if self.stats_bn_mode == "eval":
            self.model.eval()
        try:
            for slot, split in enumerate(("forget", "retain_sample")):
                part = batch.get(split) if isinstance(batch, Mapping) else None
                if part is None:
                    continue
                x, _, _ = self.split_batch(part)
                self.accumulate(split, x)
                self._counts[slot] += len(x)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def accumulate(self, split: str, x: Tensor) -> None:
        """Add the per-position sums of the hooked conv outputs on inputs ``x`` to ``split``'s statistics."""
        sums = self._sums.setdefault(split, {})
        handles = []
        modules = dict(self.model.named_modules())

        def make_hook(name: str) -> Any:
            def hook(_module: nn.Module, _args: Any, output: Tensor) -> None:
                total = output.detach().to(torch.float64).sum(0)
                sums[name] = sums[name] + total if name in sums else total

            return hook

        for name in self.layer_names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()

    def stage_end(self, stage: Stage) -> None:
        """Reduce the statistics across ranks and apply the edit after the statistics stage."""
        if stage.name != "statistics":
            return
        counts = self._reduce(self._counts.to(self.device))
        sums = {
            split: {name: self._reduce(self._layer_sum(split, name)) for name in self.layer_names}
            for split in ("forget", "retain_sample")
        }
        n_f, n_s = float(counts[0]), float(counts[1])
        divisor = n_s
        if self.retain_mean_divisor == "retain_set":
            divisor = float(self._retain_size if self._retain_size is not None else n_s)
        flags = {
            name: flag_channels(
                sums["forget"][name] / max(n_f, 1.0),
                sums["retain_sample"][name] / max(divisor, 1.0),
                float(self.hparams["toll"]),
            )
            for name in self.layer_names
        }
        self.apply_edit(flags)
        self._sums = {}

    def _layer_sum(self, split: str, name: str) -> Tensor:
        total = self._sums.get(split, {}).get(name)
        if total is None:
            raise RuntimeError(
                f"ActivationReset saw no {split} output of layer {name!r} in the statistics pass (empty split?)"
            )
        return total

    def _reduce(self, tensor: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    @torch.no_grad()
    def apply_edit(self, flags: Mapping[str, Tensor]) -> None:
        """Redraw the whole filters of the flagged channels per layer, then (``reset_head``) the head weight.

        Draws come from the seeded generator on the CPU: one full-shape Kaiming tensor per hooked layer in
        ``named_modules`` order, then one for the head weight.
        """
        generator = self._generator(ACTRESET_SEED_OFFSET)
        modules = dict(self.model.named_modules())
        reset = total = 0
        for name in self.layer_names:
            weight = modules[name].weight
            fresh = kaiming_draw(weight, generator).to(device=weight.device, dtype=weight.dtype)
            flag = flags[name].to(weight.device)
            weight.data[flag] = fresh[flag]
            count = int(flag.sum())
            reset += count
            total += flag.numel()
            self._log_value(f"actreset/channel_fraction/{name}", count / max(1, flag.numel()))
        self._log_value("actreset/channels_reset", reset)
        self._log_value("actreset/channels_total", total)
        self._log_value("actreset/channel_fraction", reset / max(1, total))
        head_reset = bool(self.hparams["reset_head"])
        if head_reset:
            weight = final_linear(self.model).weight
            weight.data.copy_(kaiming_draw(weight, generator).to(device=weight.device, dtype=weight.dtype))
        self._log_value("actreset/head_reset", float(head_reset))
