"""Boundary Unlearning: ``BoundaryShrink`` and ``BoundaryExpanding``.

Both methods shift the decision space of the forget samples instead of retraining: Boundary Shrink relabels
each forget sample with the class of its nearest adversarial neighbour and fine-tunes on those labels; Boundary
Expanding trains the forget samples into an extra "shadow" output of the head and then removes that output.

Reference: M. Chen, W. Gao, G. Liu, K. Peng, C. Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks
via Shifting the Decision Space", CVPR 2023, arXiv 2303.11570. The behaviour of the widely used implementation
(C. Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024,
``unlearn/boundary_sh.py`` and ``unlearn/boundary_ex.py`` of its classification code) is available as
``preset="reference"``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    OptimizerCallable,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.models.cut import final_linear
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_sgd

Preset = Literal["corrected", "reference"]
PRESETS: tuple[str, ...] = ("corrected", "reference")
Neighbor = Literal["argmax", "exclude_true"]
NEIGHBORS: tuple[str, ...] = ("argmax", "exclude_true")

#: Offset added to the method's seed for the shadow row's draw.
SHADOW_SEED_OFFSET = 0


# ----------------------------------------------------------------------------------------------------- functions
def fgsm_perturb(
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bound: float = 0.1,
    clamp: tuple[float, float] = (0.0, 1.0),
    levels: int | None = 255,
) -> Tensor:
    """One untargeted L-infinity FGSM step in pixel space: ``x' = q(clamp(x + bound * sign(grad_x CE)))``.

    The gradient is that of the cross-entropy of ``teacher(x)`` against ``y`` with respect to the input (the
    classifier's normalisation is its first layer, so the gradient passes through it). The teacher runs in eval
    mode (its previous mode is restored) and only the input gradient is computed: no parameter accumulates
    ``.grad``. The loss is summed over the batch, which gives every sample the sign of its own gradient (the
    mean's sign, without underflow on large batches). ``q`` rounds to the ``1 / levels`` grid; because of that
    rounding, ``|x' - x|`` is at most ``bound + 0.5 / levels`` (exactly ``bound`` without quantisation).

    Args:
        teacher: The frozen classifier attacked.
        x: Inputs, pixels in ``clamp``.
        y: Labels the attack moves away from.
        bound: Step size (the L-infinity radius), in pixel units.
        clamp: Valid pixel range.
        levels: Quantisation levels (255 for 8-bit images); ``None``: no quantisation.

    Returns:
        The perturbed inputs, detached.
    """
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            x_adv = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(teacher(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
    finally:
        teacher.train(was_training)
    perturbed = (x.detach() + bound * grad.sign()).clamp(clamp[0], clamp[1])
    if levels is not None:
        perturbed = torch.round(perturbed * levels) / levels
    return perturbed.detach()


def fgsm_neighbor_labels(
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bound: float = 0.1,
    clamp: tuple[float, float] = (0.0, 1.0),
    levels: int | None = 255,
    exclude_true: bool = True,
) -> Tensor:
    """Label of each sample's nearest adversarial neighbour: the teacher's prediction on its FGSM step.

    Args:
        teacher: The frozen classifier (run in eval mode, its mode restored afterwards).
        x: Inputs, pixels in ``clamp``.
        y: True labels.
        bound: FGSM step size in pixel units (see :func:`fgsm_perturb`).
        clamp: Valid pixel range.
        levels: Quantisation levels; ``None``: no quantisation.
        exclude_true: Return the best class other than ``y`` on the neighbour; ``False``: the plain argmax,
            which is ``y`` itself when the attack failed to cross the boundary.

    Returns:
        Long tensor of neighbour labels, shaped like ``y``.
    """
    perturbed = fgsm_perturb(teacher, x, y, bound=bound, clamp=clamp, levels=levels)
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            logits = teacher(perturbed)
    finally:
        teacher.train(was_training)
    if exclude_true:
        logits = logits.scatter(1, y.long().view(-1, 1), float("-inf"))
    return logits.argmax(1)


def classifier_linear(model: nn.Module, head_name: str | None = None) -> tuple[str, nn.Linear]:
    """The qualified name and module of the classifier's final linear layer.

    It is the last ``nn.Linear`` inside the head: the one named by ``head_name``, else the classifier's head as
    :func:`~lightning_unlearn.models.cut.final_linear` resolves it (``model.head_name``). When no head is
    declared or found, it is the last ``nn.Linear`` of ``model`` in ``named_modules`` order (the authors' rule).

    Raises:
        ValueError: If ``head_name`` does not resolve, or no ``nn.Linear`` is found.
    """
    try:
        linear = final_linear(model, head_name)
    except ValueError:
        if head_name is not None:
            raise
    else:
        for name, module in model.named_modules():
            if module is linear:
                return name, linear
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass head_name= naming its head")
    return linears[-1]


@torch.no_grad()
def expand_head(linear: nn.Linear, generator: torch.Generator | None = None) -> None:
    """Add one output row to ``linear`` in place (new ``weight`` / ``bias`` parameters, ``out_features + 1``).

    The first ``out_features`` rows are copied exactly; the new row is drawn as ``nn.Linear`` initialises one
    (weight and bias uniform in ``±1 / sqrt(in_features)``), on the CPU from ``generator`` so every rank and
    device draws the same numbers. Build the optimiser after the call: the old parameters are replaced.
    """
    weight = linear.weight
    bound = 1.0 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0.0
    row = torch.empty(1, linear.in_features).uniform_(-bound, bound, generator=generator)
    new_weight = torch.cat([weight.detach(), row.to(device=weight.device, dtype=weight.dtype)])
    linear.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
    if linear.bias is not None:
        bias = linear.bias
        value = torch.empty(1).uniform_(-bound, bound, generator=generator)
        new_bias = torch.cat([bias.detach(), value.to(device=bias.device, dtype=bias.dtype)])
        linear.bias = nn.Parameter(new_bias, requires_grad=bias.requires_grad)
    linear.out_features += 1


@torch.no_grad()
def prune_head(linear: nn.Linear, num_outputs: int) -> None:
    """Keep only the first ``num_outputs`` rows of ``linear`` in place (new ``weight`` / ``bias`` parameters).

    Raises:
        ValueError: If ``num_outputs`` is not in ``[1, out_features]``.
    """
    if not 1 <= num_outputs <= linear.out_features:
        raise ValueError(f"num_outputs must be in [1, {linear.out_features}], got {num_outputs!r}")
    weight = linear.weight
    linear.weight = nn.Parameter(weight.detach()[:num_outputs].clone(), requires_grad=weight.requires_grad)
    if linear.bias is not None:
        bias = linear.bias
        linear.bias = nn.Parameter(bias.detach()[:num_outputs].clone(), requires_grad=bias.requires_grad)
    linear.out_features = num_outputs


def _resolve(value: Any, preset: str, corrected: Any, reference: Any) -> Any:
    if value is not None:
        return value
    return reference if preset == "reference" else corrected


# ----------------------------------------------------------------------------------------------------- methods
class _BoundaryBase(GradientUnlearningMethod):
    """Shared SGD default, epoch budget (``epochs``) and argument checks of the two boundary methods."""

    train_splits = ("forget",)
    budget_argument = "epochs"

    def __init__(
        self,
        model: nn.Module,
        epochs: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        preset: str,
        optimizer: OptimizerCallable | None,
        lr_scheduler: LRSchedulerCallable | None,
    ) -> None:
        check_integer("epochs", epochs, 1)
        check_sgd(momentum, weight_decay, lr=lr)
        check_choice("preset", preset, PRESETS)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD(lr, momentum 0.9, weight decay 5e-4 coupled), constant lr, from the hyperparameters."""
        h = self.hparams
        return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])


class BoundaryShrink(_BoundaryBase):
    """Boundary Shrink: fine-tune each forget sample towards the class of its nearest adversarial neighbour.

    A frozen copy of the original classifier (the teacher, a registered submodule kept in checkpoints, always
    in eval mode) takes one FGSM step from every forget sample, ``x' = x + bound * sign(grad_x CE(teacher(x),
    y))``, clamped to [0, 1] and rounded to the 1/255 grid; the sample's new label is the teacher's prediction on
    ``x'``. The classifier is then fine-tuned (train mode) with ``CE(model(x), y_neighbour)`` on the clean
    forget samples, so the forget region shrinks into its neighbouring classes.

    Regime: gradient (automatic optimisation), ``epochs`` passes over the forget set (the epoch budget), default SGD
    lr 1e-5, momentum 0.9, weight decay 5e-4, constant lr. Data: the labelled forget set with sample indices; no
    retain data. Aimed at class removal, as in the paper.

    Corrected default (``preset="corrected"``): the neighbour is the best class other than the true one
    (``neighbor="exclude_true"``), and the neighbour labels are computed once, at fit start, from the
    unaugmented forget set (``attack_augment=False``), kept in the checkpoint and reused every epoch.
    ``preset="reference"`` reproduces the authors' code: the plain argmax on ``x'`` (a failed attack returns the
    true label, and the sample is trained towards its own class) and the attack recomputed on every served
    (possibly augmented) batch. Both presets freeze the teacher and take the input gradient only.

    The library's lr 1e-5 is a choice of this library (the authors' code has an lr argument defaulting to 0.01;
    the paper's value is not given here); the shipped configs say which value they use and why.

    Logs: ``bs/loss``, ``bs/neighbor_is_true_fraction`` (> 0 only with the plain argmax) and
    ``bs/neighbor_hist/<c>`` (fraction of forget samples relabelled to class ``c``).

    Reference: M. Chen, W. Gao, G. Liu, K. Peng, C. Wang, "Boundary Unlearning: Rapid Forgetting of Deep
    Networks via Shifting the Decision Space", CVPR 2023.

    Args:
        model: The trained classifier to unlearn.
        epochs: Passes over the forget set (the epoch budget: ``trainer.max_epochs`` is set from it).
        lr: Learning rate of the default SGD optimiser.
        bound: FGSM step (L-infinity radius) in [0, 1] pixel units.
        quantize_levels: Round the neighbour to a ``1 / levels`` grid (255: 8-bit images); ``None``: no rounding.
        neighbor: ``"exclude_true"`` (best wrong class) or ``"argmax"``; ``None`` follows the preset.
        attack_augment: Attack every served batch (augmented when the datamodule augments) instead of computing
            the labels once from the unaugmented forget set; ``None`` follows the preset.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (coupled L2).
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        preset: ``"corrected"`` or ``"reference"``.
    """

    neighbor_labels: Tensor
    neighbors_ready: Tensor

    def __init__(
        self,
        model: nn.Module,
        epochs: int = 10,
        lr: float = 1e-5,
        bound: float = 0.1,
        quantize_levels: int | None = 255,
        neighbor: Neighbor | None = None,
        attack_augment: bool | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        preset: Preset = "corrected",
    ) -> None:
        check_positive("bound", bound)
        check_integer("quantize_levels", quantize_levels, 1, optional=True)
        if neighbor is not None:
            check_choice("neighbor", neighbor, NEIGHBORS)
        check_choice("preset", preset, PRESETS)
        self.neighbor: str = _resolve(neighbor, preset, "exclude_true", "argmax")
        self.attack_augment = bool(_resolve(attack_augment, preset, False, True))
        super().__init__(model, epochs, lr, momentum, weight_decay, preset, optimizer, lr_scheduler)
        self.register_buffer("neighbor_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("neighbors_ready", torch.zeros((), dtype=torch.bool))

    def configure_models(self) -> None:
        """The teacher: a frozen deep copy of the original classifier, in eval mode."""
        self.teacher = copy.deepcopy(self.model)
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> BoundaryShrink:
        """Set the train/eval mode of the method; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """The labelled forget set with sample indices, shuffled."""
        return [Phase(epochs=max(1, max_epochs), splits=("forget",), labelled=True, with_index=True)]

    def on_fit_start(self) -> None:
        """Compute the neighbour label of every forget sample once (kept when restored from a checkpoint)."""
        if self.attack_augment or bool(self.neighbors_ready):
            return
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "split_dataset"):
            raise RuntimeError(
                "BoundaryShrink needs an UnlearningDataModule (it attacks the unaugmented forget set); "
                "or set attack_augment=True to attack the served batches"
            )
        dataset = datamodule.split_dataset("forget", labelled=True, augment=False)
        batch_size = getattr(datamodule, "eval_batch_size", None) or getattr(datamodule, "batch_size", None) or 256
        labels = []
        for batch in DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=0):  # LabelledPair
            labels.append(self.neighbors(batch.input.to(self.device), batch.target.to(self.device)))
        self.neighbor_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=self.device)
        self.neighbors_ready.fill_(True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy of a clean forget batch against its neighbour labels."""
        x, y, index = self.labelled_batch(batch["forget"])
        if self.attack_augment:
            target = self.neighbors(x, y)
        else:
            if index is None:
                raise RuntimeError("BoundaryShrink needs forget batches with sample indices")
            target = self.neighbor_labels[index]
        logits = self(x)
        loss = F.cross_entropy(logits, target)
        n = len(x)
        self.log("bs/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("bs/neighbor_is_true_fraction", (target == y).float().mean(), on_epoch=True, batch_size=n)
        counts = torch.bincount(target, minlength=logits.shape[1]).float() / max(n, 1)
        for c in range(logits.shape[1]):
            self.log(f"bs/neighbor_hist/{c}", counts[c], on_step=False, on_epoch=True, batch_size=n)
        return loss

    def neighbors(self, x: Tensor, y: Tensor) -> Tensor:
        """Neighbour labels of ``(x, y)`` from the teacher (see :func:`fgsm_neighbor_labels`)."""
        h = self.hparams
        return fgsm_neighbor_labels(
            self.teacher,
            x,
            y,
            bound=float(h["bound"]),
            levels=h["quantize_levels"],
            exclude_true=self.neighbor == "exclude_true",
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose neighbour table differs in length from the empty placeholder."""
        labels = state_dict.get("neighbor_labels")
        if labels is not None:
            self.neighbor_labels = torch.empty_like(labels)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class BoundaryExpanding(_BoundaryBase):
    """Boundary Expanding: train the forget set into an extra shadow class, then prune that class away.

    At fit setup (before the optimiser is built) the classifier's final linear layer gets one more output row,
    drawn as ``nn.Linear`` initialises a row (uniform in ``±1 / sqrt(in_features)``) from a seeded generator,
    identical on every rank; the ``C`` original rows are copied exactly. Every parameter is then fine-tuned
    (train mode) with ``CE(model(x), C)`` on forget batches, pushing the forget samples into the shadow class.
    At fit end the shadow row is removed (``prune_shadow``): the head again has ``C`` outputs, equal to the
    trained first ``C`` rows, so a forget sample falls back to its best real class and ``classifier.pt`` loads
    with ``load_classifier(arch, C, ...)``. While the head is expanded, evaluation scores the first ``C`` logits
    (exactly the pruned classifier); before the first step, always (the original classifier).

    Regime: gradient (automatic optimisation), ``epochs`` passes over the forget set (the epoch budget), default SGD
    lr 1e-5, momentum 0.9, weight decay 5e-4, constant lr. Data: the forget set, inputs only. Aimed at class
    removal, as in the paper.

    The final linear layer is the last ``nn.Linear`` of the head named by ``head_name`` (default: the
    classifier's head as the library resolves it; when none is found, the classifier's last ``nn.Linear``,
    the authors' rule). Checkpoints written during
    training (``last.ckpt``) hold the expanded ``C + 1``-row head, so a run resumes with its trained shadow
    row; loading such a checkpoint into the method expands the head first.

    ``preset="reference"`` reproduces the authors' code, which never prunes: the ``C + 1``-way classifier is
    kept, exported and scored over all ``C + 1`` logits (a shadow prediction counts as wrong).

    Logs: ``be/loss``, ``be/shadow_pred_fraction`` (forget samples predicted as the shadow class).

    Reference: M. Chen, W. Gao, G. Liu, K. Peng, C. Wang, "Boundary Unlearning: Rapid Forgetting of Deep
    Networks via Shifting the Decision Space", CVPR 2023.

    Args:
        model: The trained classifier to unlearn.
        head_name: Name of the head submodule; ``None`` uses the classifier's head (its ``head_name``), or its
            last ``nn.Linear`` when no head is found.
        epochs: Passes over the forget set (the epoch budget: ``trainer.max_epochs`` is set from it).
        lr: Learning rate of the default SGD optimiser.
        prune_shadow: Remove the shadow output at fit end; ``None`` follows the preset.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (coupled L2).
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the shadow row; ``None``: the run's global seed (``seed_everything``), else 0.
    """

    needs_labels = False
    shadow_trained: Tensor

    def __init__(
        self,
        model: nn.Module,
        head_name: str | None = None,
        epochs: int = 10,
        lr: float = 1e-5,
        prune_shadow: bool | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
    ) -> None:
        check_integer("seed", seed, optional=True)
        check_choice("preset", preset, PRESETS)
        self.prune_shadow = bool(_resolve(prune_shadow, preset, True, False))
        self._linear_name, linear = classifier_linear(model, head_name)
        #: Number of real classes ``C`` (the final layer's outputs before expansion).
        self.num_classes = int(linear.out_features)
        super().__init__(model, epochs, lr, momentum, weight_decay, preset, optimizer, lr_scheduler)
        self.register_buffer("shadow_trained", torch.zeros((), dtype=torch.bool))

    @property
    def linear(self) -> nn.Linear:
        """The classifier's final linear layer (the one expanded and pruned)."""
        module = self.model.get_submodule(self._linear_name)
        if not isinstance(module, nn.Linear):
            raise RuntimeError(f"BoundaryExpanding: {self._linear_name!r} is no longer an nn.Linear")
        return module

    @property
    def expanded(self) -> bool:
        """Whether the head currently carries the shadow output."""
        return self.linear.out_features == self.num_classes + 1

    def setup(self, stage: str) -> None:
        """As the base; for ``fit``, add the shadow output before the optimiser is built."""
        super().setup(stage)
        if stage == "fit" and not self.expanded:
            self.expand()

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """The forget set, inputs only, shuffled."""
        return [Phase(epochs=max(1, max_epochs), splits=("forget",), labelled=False)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy of a forget batch against the shadow class, over ``C + 1`` logits."""
        if not self.expanded:
            raise RuntimeError("BoundaryExpanding: the head has no shadow output (expand() runs at fit setup)")
        x, _, _ = self.split_batch(batch["forget"])
        logits = self(x)
        target = torch.full((len(x),), self.num_classes, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(logits, target)
        n = len(x)
        self.log("be/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        shadow = (logits.detach().argmax(1) == self.num_classes).float().mean()
        self.log("be/shadow_pred_fraction", shadow, on_step=False, on_epoch=True, batch_size=n)
        self.shadow_trained.fill_(True)
        return loss

    def on_fit_end(self) -> None:
        """Remove the shadow output (with ``prune_shadow``): the head keeps its trained first ``C`` rows."""
        if self.prune_shadow and self.expanded:
            self.prune()

    def _eval_step(self, batch: Any) -> dict[str, Tensor]:
        """Evaluation outputs; the first ``C`` logits while pruning is due or before the shadow is trained."""
        out = super()._eval_step(batch)
        if self.expanded and (self.prune_shadow or not bool(self.shadow_trained)):
            out["logits"] = out["logits"][:, : self.num_classes]
        return out

    def expand(self) -> None:
        """Add the shadow output to the final linear layer (a no-op when it is already there)."""
        if self.expanded:
            return
        expand_head(self.linear, self._shadow_generator())

    def prune(self) -> None:
        """Remove the shadow output from the final linear layer (a no-op when it is not there)."""
        if self.expanded:
            prune_head(self.linear, self.num_classes)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Expand (or prune) the head first so its shape matches the stored one."""
        stored = state_dict.get(f"model.{self._linear_name}.weight")
        if isinstance(stored, Tensor) and stored.dim() == 2:
            rows = int(stored.shape[0])
            if rows == self.num_classes + 1:
                self.expand()
            elif rows == self.num_classes:
                self.prune()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _shadow_generator(self) -> torch.Generator:
        seed = self.hparams.get("seed")
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return seeded_generator(int(seed), SHADOW_SEED_OFFSET)
