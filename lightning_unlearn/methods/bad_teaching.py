"""Bad Teaching: distil from a competent teacher on retained data and an incompetent one on forgotten data."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    OptimizerCallable,
    check_choice,
    check_integer,
    check_positive,
)

KLReduction = Literal["batchmean", "mean"]
TeacherInit = Literal["reinit", "constructor"]
_PRESETS = ("corrected", "reference")
_UNION = "forget+retain_sample"
#: Offset of the incompetent teacher's seed from the method's ``seed``.
TEACHER_SEED_OFFSET = 7_919


def reinitialize(module: nn.Module, seed: int | None) -> nn.Module:
    """Re-initialise in place every submodule of ``module`` that has ``reset_parameters``.

    Modules without ``reset_parameters`` (such as the classifier's input normalisation) keep their buffers.
    ``reset_parameters`` draws from the global RNG, so with a ``seed`` it runs under a forked global RNG seeded
    with it (the same network on every rank and every run); with ``None`` it draws from the current global RNG,
    as constructing a new network would.
    """

    def _reset() -> None:
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()

    if seed is None:
        _reset()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _reset()
    return module


def bad_teaching_loss(
    student: Tensor,
    competent: Tensor,
    incompetent: Tensor,
    forget_flag: Tensor,
    temperature: float = 1.0,
    reduction: KLReduction = "batchmean",
) -> Tensor:
    """KL divergence from each sample's teacher to the student (no ``T**2`` factor).

    Each sample's target is ``softmax(incompetent / T)`` when flagged as forgotten, else ``softmax(competent / T)``;
    the loss is ``KL(target || softmax(student / T))``. ``"batchmean"`` sums over classes and averages over samples;
    ``"mean"`` averages over all ``B x C`` entries (``C`` times smaller), as the authors' code does.
    """
    flag = forget_flag.to(torch.bool).unsqueeze(1)
    target = torch.where(flag, F.softmax(incompetent / temperature, dim=1), F.softmax(competent / temperature, dim=1))
    return F.kl_div(F.log_softmax(student / temperature, dim=1), target, reduction=reduction)


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class BadTeaching(GradientUnlearningMethod):
    """Bad Teaching: a student distilled from a competent teacher on retained and an incompetent one on forgotten data.

    The student is the injected classifier, trained in place (train mode). The competent teacher is a frozen copy of
    the original classifier; the incompetent teacher is a frozen, randomly initialised network of the same
    architecture (a copy of the classifier with every ``reset_parameters`` module re-initialised from the method's
    seed, its input normalisation kept), or the ``incompetent_teacher`` given. Both teachers stay in eval mode and
    are saved in checkpoints, so a resumed run never rebuilds them. Each sample is pulled toward one teacher:
    ``KL(p || q)`` with ``p`` the teacher's softmax at temperature ``T`` and ``q`` the student's (no ``T**2``).

    Regime: gradient (automatic optimisation, Adam lr 1e-4 over the student only; one epoch). Data: the forget set
    followed by a seeded retain sample of ``floor(retain_fraction * |retain|)`` samples, one shuffled loader of
    batch 256, inputs only (no labels) with their positions: a position below ``|forget|`` marks a forgotten sample.

    Presets: ``"corrected"`` (default) averages the KL over samples (``batchmean``) and re-initialises the incompetent
    teacher from the seed. ``"reference"`` reproduces the authors' code: the KL is averaged over all ``B x C`` entries
    (``kl_reduction="mean"``: the loss is ``C`` times smaller, which Adam mostly ignores) and the incompetent teacher
    draws its weights from the global RNG like a freshly constructed network (``teacher_init="constructor"``).
    The authors draw the retain subset with Python's ``random``; here it is the datamodule's seeded sample, the same
    on every rank.

    Reference: V. S. Chundawat, A. K. Tarun, M. Mandal, M. Kankanhalli, "Can Bad Teaching Induce Forgetting?
    Unlearning in Deep Networks Using an Incompetent Teacher", AAAI 2023.

    Args:
        model: The trained classifier to unlearn (the student; its copy is the competent teacher).
        lr: Learning rate of the default Adam optimiser.
        epochs: Training epochs (the method's epoch budget: ``trainer.max_epochs`` is set from it).
        batch_size: Batch size of the mixed forget + retain-sample loader.
        retain_fraction: Fraction of the retain set in the retain sample, in (0, 1].
        retain_sample_size: Size of the retain sample; overrides ``retain_fraction`` when given.
        temperature: Distillation temperature ``T`` > 0.
        optimizer: Optimiser factory replacing the default Adam (its own lr wins).
        incompetent_teacher: Network used as the incompetent teacher instead of the re-initialised copy.
        preset: ``"corrected"`` or ``"reference"`` (see above).
        seed: Seed of the incompetent teacher's initialisation.
        kl_reduction: ``"batchmean"`` or ``"mean"``; ``None`` follows the preset.
        teacher_init: ``"reinit"`` (seeded) or ``"constructor"`` (global RNG); ``None`` follows the preset.
    """

    needs_labels = False
    budget_argument = "epochs"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-4,
        epochs: int = 1,
        batch_size: int = 256,
        retain_fraction: float = 0.3,
        retain_sample_size: int | None = None,
        temperature: float = 1.0,
        optimizer: OptimizerCallable | None = None,
        incompetent_teacher: nn.Module | None = None,
        preset: Literal["corrected", "reference"] = "corrected",
        seed: int = 0,
        kl_reduction: KLReduction | None = None,
        teacher_init: TeacherInit | None = None,
    ) -> None:
        check_positive("lr", lr)
        check_integer("epochs", epochs, 1)
        check_integer("batch_size", batch_size, 1)
        if not (math.isfinite(retain_fraction) and 0.0 < retain_fraction <= 1.0):
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction!r}")
        check_integer("retain_sample_size", retain_sample_size, 1, optional=True)
        check_positive("temperature", temperature)
        check_choice("preset", preset, _PRESETS)
        check_integer("seed", seed)
        if kl_reduction is not None:
            check_choice("kl_reduction", kl_reduction, ("batchmean", "mean"))
        if teacher_init is not None:
            check_choice("teacher_init", teacher_init, ("reinit", "constructor"))
        if incompetent_teacher is not None and not isinstance(incompetent_teacher, nn.Module):
            raise TypeError(f"incompetent_teacher must be a torch.nn.Module or None, got {type(incompetent_teacher)}")
        super().__init__(model, optimizer=optimizer)
        reference = preset == "reference"
        self.kl_reduction: KLReduction = kl_reduction or ("mean" if reference else "batchmean")
        self.teacher_init: TeacherInit = teacher_init or ("constructor" if reference else "reinit")
        self.competent_teacher = _frozen(copy.deepcopy(self.model))
        if incompetent_teacher is None:
            teacher_seed = seed + TEACHER_SEED_OFFSET if self.teacher_init == "reinit" else None
            incompetent_teacher = reinitialize(copy.deepcopy(self.model), teacher_seed)
        self.incompetent_teacher = _frozen(incompetent_teacher)
        self._num_forget: int | None = None

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> BadTeaching:
        """Set the training mode of the student only; the teachers always stay in eval mode."""
        super().train(mode)
        self.competent_teacher.eval()
        self.incompetent_teacher.eval()
        return self

    # ------------------------------------------------------------------ data
    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One shuffled, unlabelled loader over the forget set followed by the retain sample, with positions."""
        epochs = int(self.hparams["epochs"])
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "forget_indices", None) is None:
            raise RuntimeError("BadTeaching needs an UnlearningDataModule (it reads the forget-set size)")
        num_forget = int(datamodule.forget_indices.numel())
        num_retain = int(datamodule.retain_indices.numel())
        if num_forget == 0:
            raise ValueError("BadTeaching needs a non-empty forget split")
        if num_retain == 0:
            raise ValueError("BadTeaching needs a non-empty retain split")
        self._num_forget = num_forget
        return [
            Phase(
                epochs=epochs,
                splits=(_UNION,),
                labelled=False,
                with_index=True,
                shuffle=True,
                batch_size=int(self.hparams["batch_size"]),
                sample_size=self.retain_sample_size(num_retain),
            )
        ]

    def retain_sample_size(self, num_retain: int) -> int:
        """Retain sample size: ``retain_sample_size`` (capped at ``num_retain``) or ``floor(fraction * num_retain)``."""
        given = self.hparams["retain_sample_size"]
        if given is not None:
            return min(int(given), num_retain)
        return max(1, math.floor(float(self.hparams["retain_fraction"]) * num_retain))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """KL toward the competent teacher on retained samples and the incompetent one on forgotten samples."""
        if self._num_forget is None:
            raise RuntimeError("BadTeaching needs an UnlearningDataModule (it reads the forget-set size)")
        x, _, index = self.split_batch(batch[_UNION])
        if index is None:
            raise RuntimeError("BadTeaching needs batches with sample indices (an UnlabelledBatch or LabelledBatch)")
        flag = index < self._num_forget
        with torch.no_grad():
            competent = self.competent_teacher(x)
            incompetent = self.incompetent_teacher(x)
        student = self(x)
        temperature = float(self.hparams["temperature"])
        loss = bad_teaching_loss(student, competent, incompetent, flag, temperature, self.kl_reduction)
        size = len(x)
        self.log("badteach/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("badteach/forget_fraction", flag.float().mean(), on_step=True, on_epoch=True, batch_size=size)
        with torch.no_grad():
            for name, part in (("kl_retain", ~flag), ("kl_forget", flag)):
                if bool(part.any()):
                    kl = bad_teaching_loss(
                        student[part], competent[part], incompetent[part], flag[part], temperature, "batchmean"
                    )
                    self.log(f"badteach/{name}", kl, on_step=True, on_epoch=True, batch_size=int(part.sum()))
        return loss

    # ------------------------------------------------------------------ optimisers
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """The student's trainable parameters (never the teachers')."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """Adam with the method's ``lr``."""
        return torch.optim.Adam(params, lr=float(self.hparams["lr"]))
