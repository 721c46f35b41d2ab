"""SCRUB: teacher-student unlearning by alternating max-steps on the forget set and min-steps on the retain set.

Reference: M. Kurmanji, P. Triantafillou, J. Hayes, E. Triantafillou, "Towards Unbounded Machine Unlearning",
NeurIPS 2023 (arXiv:2302.09880); the authors' code is github.com/meghdadk/SCRUB.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_unlearn.compat import is_last_training_batch
from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.datamodules.samplers import UnrepeatedDistributedSampler
from lightning_unlearn.methods.base import (
    MultiStageUnlearningMethod,
    OptimizerCallable,
    Stage,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.validation import check_sgd

Preset = Literal["corrected", "reference"]
PRESETS: tuple[str, ...] = ("corrected", "reference")
RewindRule = Literal["closest", "first_above"]
REWIND_RULES: tuple[str, ...] = ("closest", "first_above")
OPTIMS: tuple[str, ...] = ("sgd", "adam")
MAX_PASS, MIN_PASS = "max", "min"
_CKPT_KEY = "scrub_rewind"


# ----------------------------------------------------------------------------------------------------- functions
def scrub_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``KL(teacher || student)`` of the temperature-softened predictions, times ``T^2``, averaged over the batch.

    ``D_T = T^2 / B * sum_i sum_c p_t[i, c] (log p_t[i, c] - log p_s[i, c])`` with ``p = softmax(z / T)``: the
    distillation loss of G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network" (2015), as
    SCRUB uses it (a sum over classes, a mean over the ``B`` samples of the batch, not over all elements).

    Args:
        student_logits: ``B x C`` logits of the student (gradients flow through them).
        teacher_logits: ``B x C`` logits of the frozen teacher.
        temperature: Softening temperature ``T > 0``.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * (t * t) / student_logits.shape[0]


def scrub_max_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Loss of a max-step on a forget batch: ``-D_T`` (descending it pushes the student away from the teacher)."""
    return -scrub_divergence(student_logits, teacher_logits, temperature)


def scrub_min_loss(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float, alpha: float, gamma: float
) -> Tensor:
    """Loss of a min-step on a retain batch: ``gamma * CE(student, y) + alpha * D_T`` (batch means)."""
    ce = F.cross_entropy(student_logits, targets)
    return gamma * ce + alpha * scrub_divergence(student_logits, teacher_logits, temperature)


def smoothing_penalty(params: Iterable[Tensor], anchor: Iterable[Tensor], weight: float) -> Tensor:
    """``weight * sum_l ||theta_l - anchor_l||_F``: per-tensor Frobenius norms (not squared), summed.

    The gradient is ``weight * (theta_l - anchor_l) / ||theta_l - anchor_l||`` and 0 where a tensor equals its
    anchor.
    """
    terms = [torch.linalg.vector_norm(p - a.detach()) for p, a in zip(params, anchor, strict=True)]
    if not terms:
        return torch.zeros(())
    return weight * torch.stack(terms).sum()


def lr_at_epoch(epoch: int, lr0: float, decay_epochs: Sequence[int], rate: float) -> float | None:
    """Learning rate of SCRUB epoch ``epoch`` (1-based): ``lr0 * rate^n``, ``n = #{d in decay_epochs: epoch > d}``.

    Returns ``None`` when no decay epoch has passed (``n = 0``): the optimiser then keeps its own learning rate.
    """
    n = sum(1 for d in decay_epochs if epoch > d)
    return lr0 * rate**n if n > 0 else None


def pass_layout(epochs: int, max_epochs_forget: int) -> list[tuple[int, str]]:
    """``(SCRUB epoch, pass)`` of each Lightning epoch: ``[max, min]`` for epochs ``1..M``, then ``[min]``.

    ``M = min(max_epochs_forget, epochs)``; passes are ``"max"`` (forget set) and ``"min"`` (retain set).
    """
    m = min(max_epochs_forget, epochs)
    layout: list[tuple[int, str]] = []
    for e in range(1, epochs + 1):
        if e <= m:
            layout.append((e, MAX_PASS))
        layout.append((e, MIN_PASS))
    return layout


def select_rewind(errors: Sequence[float], target: float, rule: str = "closest") -> int:
    """Index ``k*`` of the epoch to rewind to, given ``errors[k]`` (forget error after ``k`` epochs) and a target.

    ``"closest"``: the first ``k`` minimising ``|errors[k] - target|``; ``"first_above"``: the first ``k`` with
    ``errors[k] > target`` (the last ``k`` when none is).
    """
    check_choice("rewind_rule", rule, REWIND_RULES)
    if not errors:
        raise ValueError("select_rewind needs at least one recorded error")
    if rule == "closest":
        gaps = [abs(float(e) - float(target)) for e in errors]
        return gaps.index(min(gaps))
    for k, e in enumerate(errors):
        if float(e) > float(target):
            return k
    return len(errors) - 1


# ----------------------------------------------------------------------------------------------------- method
class SCRUB(MultiStageUnlearningMethod):
    """SCRUB: distil a student from the frozen original, away from it on the forget set, towards it on the rest.

    The student is the classifier given (trained in place); the teacher is a frozen copy of it taken at
    construction. SCRUB epoch ``e = 1..epochs``: if ``e <= max_epochs_forget`` one full **max-pass** over the
    forget set (loss ``-D_T(student, teacher)``, batch ``forget_batch_size``), then one full **min-pass** over the
    retain set (loss ``gamma * CE + alpha * D_T``, batch ``retain_batch_size``). ``D_T`` is ``KL(teacher ||
    student)`` of the softmax at temperature ``T``, times ``T^2``, averaged over the batch
    (:func:`scrub_divergence`). The student trains in train mode on both passes (batch norm statistics absorb
    forget batches too); the teacher stays in eval mode under ``no_grad``.

    One optimiser serves every pass, so SGD momentum or Adam moments (and the coupled L2 weight decay) carry
    from a max-pass into the next min-pass: SGD(lr, momentum, weight_decay) or Adam(lr, weight_decay), or the
    injected ``optimizer``. At the start of SCRUB epoch ``e`` the learning rate becomes ``lr0 * rate^n`` with
    ``n = #{d in lr_decay_epochs: e > d}`` (unchanged while ``n = 0``).

    SCRUB+R (``rewind=True``): after each SCRUB epoch the student's state and its forget-set error are kept; the
    target is the error of the final student on held-out data of the forget set's classes (the datamodule's test
    samples whose label occurs in the forget set); the student is reset to the epoch whose forget error is
    closest to it (``rewind_rule="closest"``, first on ties; ``"first_above"``: the first epoch whose error
    exceeds it). Epoch 0 is the original model: choosing it returns the original (with a warning). The rewind
    happens after the last training batch, before the final evaluation and checkpoint; it logs
    ``scrub/rewind_epoch``, ``scrub/rewind_target_error`` and ``scrub/forget_error_selected`` (errors in %).

    Smoothing (``smoothing > 0``, the variant of the first code release): ``smoothing * sum_l ||theta_l -
    theta0_l||_F`` over parameter tensors, anchored on the original (teacher) weights, is added to every loss.

    Regime: multi-stage (manual optimisation), one Lightning epoch per pass: stages ``max``/``min`` alternate for
    the first ``M = min(max_epochs_forget, epochs)`` SCRUB epochs, then one ``min`` stage of ``epochs - M``
    epochs. The epoch budget ``epochs + M`` follows from the stages (``trainer.max_epochs`` is set from it and the
    loaders are rebuilt every epoch). Splits:
    ``forget`` (shuffled, labels not served) and labelled ``retain`` (shuffled), each with its own batch size;
    SCRUB+R also evaluates on the ``forget`` and ``test`` splits.

    Presets: ``"corrected"`` (default) and ``"reference"`` (the authors' code) differ only in the forget batches:
    the reference serves them with labels and computes a cross-entropy it never uses (logged here as
    ``scrub/forget_ce``); the numbers are the same. The smoothing term is off in both (the authors' current code
    removed it). Where the authors' rewind code can pick epoch 0, for which it keeps no checkpoint, both presets
    return the original model. Clipping (``max_grad_norm``) is off by default, as in the authors' code.

    Logged: ``scrub/forget_kl`` (``D_T`` of max-steps), ``scrub/max_loss``, ``scrub/retain_kl``,
    ``scrub/retain_ce``, ``scrub/min_loss``, ``scrub/smoothing`` (when > 0), ``scrub/lr``, ``scrub/epoch`` (SCRUB
    epoch, 1-based) and ``scrub/pass`` (0 = max, 1 = min).

    Defaults are the authors' CIFAR-10 class-removal setting (SGD lr 5e-4, momentum 0.9, weight decay 5e-4, T 4,
    alpha 0.001, gamma 0.99, 2 max-epochs of 3, decay after epochs 3, 5, 9 by 0.1, batches 512 / 256).

    Reference: M. Kurmanji, P. Triantafillou, J. Hayes, E. Triantafillou, "Towards Unbounded Machine Unlearning",
    NeurIPS 2023.

    Args:
        model: The trained classifier to unlearn (becomes the student; the teacher is a frozen copy).
        epochs: SCRUB epochs ``E`` (each ends with a min-pass), >= 1.
        max_epochs_forget: SCRUB epochs ``M`` that start with a max-pass (``msteps``), >= 0; ``M > E`` acts as ``E``.
        temperature: Softmax temperature ``T`` of the divergence, > 0.
        alpha: Weight of the divergence in min-steps, >= 0.
        gamma: Weight of the retain cross-entropy in min-steps, >= 0.
        optim: Built-in optimiser, ``"sgd"`` or ``"adam"`` (torch Adam with coupled L2 decay).
        lr: Initial learning rate ``lr0`` of the built-in optimiser.
        momentum: SGD momentum in ``[0, 1)`` (ignored by Adam).
        weight_decay: Coupled L2 weight decay, >= 0.
        lr_decay_epochs: SCRUB epochs after which the learning rate is multiplied by ``lr_decay_rate``.
        lr_decay_rate: Decay factor, > 0.
        forget_batch_size: Batch size of the max-passes.
        retain_batch_size: Batch size of the min-passes.
        smoothing: Weight of the proximal term towards the original weights, >= 0 (0: off).
        rewind: SCRUB+R: rewind to the epoch whose forget error matches the held-out error.
        rewind_rule: ``"closest"`` or ``"first_above"``.
        max_grad_norm: Clip the gradient norm of every step to this value; ``None``: no clipping.
        optimizer: Optimiser factory replacing the built-in one (called once with the student's parameters; its
            own lr is ``lr0`` of the schedule).
        preset: ``"corrected"`` or ``"reference"``.
    """

    teacher: nn.Module

    def __init__(
        self,
        model: nn.Module,
        *,
        epochs: int = 3,
        max_epochs_forget: int = 2,
        temperature: float = 4.0,
        alpha: float = 0.001,
        gamma: float = 0.99,
        optim: Literal["sgd", "adam"] = "sgd",
        lr: float = 5e-4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_decay_epochs: tuple[int, ...] = (3, 5, 9),
        lr_decay_rate: float = 0.1,
        forget_batch_size: int = 512,
        retain_batch_size: int = 256,
        smoothing: float = 0.0,
        rewind: bool = False,
        rewind_rule: RewindRule = "closest",
        max_grad_norm: float | None = None,
        optimizer: OptimizerCallable | None = None,
        preset: Preset = "corrected",
    ) -> None:
        check_integer("epochs", epochs, 1)
        check_integer("max_epochs_forget", max_epochs_forget, 0)
        check_positive("temperature", temperature)
        check_positive("alpha", alpha, allow_zero=True)
        check_positive("gamma", gamma, allow_zero=True)
        check_choice("optim", optim, OPTIMS)
        check_sgd(momentum, weight_decay, lr=lr)
        if isinstance(lr_decay_epochs, str | bytes) or not isinstance(lr_decay_epochs, Sequence):
            raise ValueError(f"lr_decay_epochs must be a sequence of integers >= 0, got {lr_decay_epochs!r}")
        for d in lr_decay_epochs:
            check_integer("each of lr_decay_epochs", d, 0)
        check_positive("lr_decay_rate", lr_decay_rate)
        check_integer("forget_batch_size", forget_batch_size, 1)
        check_integer("retain_batch_size", retain_batch_size, 1)
        check_positive("smoothing", smoothing, allow_zero=True)
        if not isinstance(rewind, bool):
            raise ValueError(f"rewind must be one of (False, True), got {rewind!r}")
        check_choice("rewind_rule", rewind_rule, REWIND_RULES)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        check_choice("preset", preset, PRESETS)
        self._optimizer_factory = optimizer
        super().__init__(model)
        self.forget_labelled = preset == "reference"
        self._layout = pass_layout(epochs, max_epochs_forget)
        self._rewind_errors: list[float] = [math.nan] * (epochs + 1)
        self._rewind_states: dict[int, dict[str, Tensor]] = {}
        self._rewind_selected: int | None = None

    def configure_models(self) -> None:
        """The frozen teacher: a copy of the classifier, without gradients, in eval mode."""
        teacher = copy.deepcopy(self.model)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.eval()

    # ------------------------------------------------------------------ plan
    def stages(self) -> list[Stage]:
        """``max``/``min`` stages of one epoch each for the first ``M`` SCRUB epochs, then one ``min`` stage."""
        h = self.hparams
        forget = Phase(
            epochs=1,
            splits=("forget",),
            batch_size=int(h["forget_batch_size"]),
            labelled=self.forget_labelled,
            shuffle=True,
        )
        retain = Phase(epochs=1, splits=("retain",), batch_size=int(h["retain_batch_size"]), labelled=True)
        m = min(int(h["max_epochs_forget"]), int(h["epochs"]))
        out: list[Stage] = []
        for _ in range(m):
            out += [Stage(MAX_PASS, 1, forget), Stage(MIN_PASS, 1, retain)]
        if int(h["epochs"]) > m:
            out.append(Stage(MIN_PASS, int(h["epochs"]) - m, retain))
        return out

    def pass_at(self, epoch: int) -> tuple[int, str]:
        """``(SCRUB epoch, "max" | "min")`` of Lightning epoch ``epoch`` (0-based)."""
        return self._layout[min(max(epoch, 0), len(self._layout) - 1)]

    # ------------------------------------------------------------------ train hooks
    def on_train_start(self) -> None:
        """SCRUB+R: measure the original model's forget error (rewind candidate 0) unless restored."""
        if self.hparams["rewind"] and math.isnan(self._rewind_errors[0]):
            self._rewind_errors[0] = self._error(self.teacher, self._forget_dataset())

    def on_train_epoch_start(self) -> None:
        """Set the SCRUB epoch's learning rate, the student's train and the teacher's eval mode; log the pass."""
        super().on_train_epoch_start()
        self.model.train()
        self.teacher.eval()
        scrub_epoch, kind = self.pass_at(self.current_epoch)
        h = self.hparams
        optimizer: Any = self.optimizers()
        for group in optimizer.param_groups:
            lr = lr_at_epoch(scrub_epoch, float(group["scrub_lr0"]), h["lr_decay_epochs"], h["lr_decay_rate"])
            if lr is not None:
                group["lr"] = lr
        self._log_epoch("scrub/lr", float(optimizer.param_groups[0]["lr"]))
        self._log_epoch("scrub/epoch", float(scrub_epoch))
        self._log_epoch("scrub/pass", 0.0 if kind == MAX_PASS else 1.0)

    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """One max-step (forget batch) or min-step (retain batch) on the shared optimiser."""
        if self.teacher.training:
            self.teacher.eval()
        if stage.name == MAX_PASS:
            x, y, _ = self.split_batch(batch["forget"])
            logits = self.model(x)
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            kl = scrub_divergence(logits, teacher_logits, self.hparams["temperature"])
            loss = -kl
            n = len(x)
            self._log_step("scrub/forget_kl", kl, n)
            if y is not None:  # reference: the forget labels' cross-entropy is computed, never used
                self._log_step("scrub/forget_ce", F.cross_entropy(logits.detach(), y), n)
            loss = self._add_smoothing(loss, n)
            self._log_step("scrub/max_loss", loss, n)
        else:
            x, y, _ = self.labelled_batch(batch["retain"])
            logits = self.model(x)
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            h = self.hparams
            kl = scrub_divergence(logits, teacher_logits, h["temperature"])
            ce = F.cross_entropy(logits, y)
            loss = h["gamma"] * ce + h["alpha"] * kl
            n = len(x)
            self._log_step("scrub/retain_kl", kl, n)
            self._log_step("scrub/retain_ce", ce, n)
            loss = self._add_smoothing(loss, n)
            self._log_step("scrub/min_loss", loss, n)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.hparams["max_grad_norm"] is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=float(self.hparams["max_grad_norm"]), gradient_clip_algorithm="norm"
            )
        optimizer.step()
        return loss.detach()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """As the base; SCRUB+R records each SCRUB epoch's end and rewinds after the very last batch."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.hparams["rewind"] and self._is_last_batch(batch_idx):
            self._rewind_epoch_end()

    def on_train_epoch_end(self) -> None:
        """As the base (fallback for epochs whose last batch was not seen), for the rewind record too."""
        super().on_train_epoch_end()
        if self.hparams["rewind"]:
            self._rewind_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep SCRUB+R's per-epoch states and errors, so a resumed run rewinds identically."""
        if self.hparams["rewind"]:
            checkpoint[_CKPT_KEY] = {
                "errors": list(self._rewind_errors),
                "states": {str(k): v for k, v in self._rewind_states.items()},
                "selected": -1 if self._rewind_selected is None else self._rewind_selected,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore SCRUB+R's record (see :meth:`on_save_checkpoint`)."""
        record = checkpoint.get(_CKPT_KEY)
        if record is None:
            return
        self._rewind_errors = [float(e) for e in record["errors"]]
        self._rewind_states = {int(k): dict(v) for k, v in record["states"].items()}
        selected = int(record["selected"])
        self._rewind_selected = None if selected < 0 else selected

    # ------------------------------------------------------------------ optimiser
    def shares_optimizer(self) -> bool:
        """Every pass steps the one optimiser of the student (its momentum carries across passes)."""
        return True

    def configure_stage_optimizer(self, stage: Stage) -> Optimizer | None:
        """One optimiser over the student's trainable parameters, shared by every pass."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        h = self.hparams
        optimizer: Optimizer
        if self._optimizer_factory is not None:
            optimizer = self._optimizer_factory(params)
        elif h["optim"] == "adam":
            optimizer = torch.optim.Adam(params, lr=h["lr"], weight_decay=h["weight_decay"])
        else:
            optimizer = torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])
        for group in optimizer.param_groups:
            group.setdefault("scrub_lr0", group["lr"])
        return optimizer

    # ------------------------------------------------------------------ helpers
    def _log_step(self, name: str, value: Tensor, batch_size: int) -> None:
        self.log(name, value.detach(), on_step=True, on_epoch=True, batch_size=batch_size)

    def _log_epoch(self, name: str, value: float) -> None:
        self.log(name, value, on_step=False, on_epoch=True, batch_size=1)

    def _add_smoothing(self, loss: Tensor, batch_size: int) -> Tensor:
        weight = float(self.hparams["smoothing"])
        if weight <= 0:
            return loss
        term = smoothing_penalty(self.model.parameters(), self.teacher.parameters(), weight)
        self._log_step("scrub/smoothing", term, batch_size)
        return loss + term

    def _is_last_batch(self, batch_idx: int) -> bool:
        return is_last_training_batch(self.trainer, batch_idx)

    def _datamodule(self) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "split_dataset"):
            raise RuntimeError("SCRUB with rewind=True needs an UnlearningDataModule (it evaluates the forget set)")
        return datamodule

    def _forget_dataset(self) -> Dataset[Any]:
        return self._datamodule().split_dataset("forget", labelled=True)

    def _forget_validation_dataset(self) -> Dataset[Any]:
        """Held-out (test) samples whose label is among the forget set's labels."""
        datamodule = self._datamodule()
        labels = datamodule.split_targets("forget").unique()
        test = datamodule.split_dataset("test", labelled=True)
        keep = torch.isin(datamodule.split_targets("test"), labels).nonzero().flatten().tolist()
        if not keep:
            raise RuntimeError("SCRUB rewind: the test split holds no sample of the forget set's classes")
        return Subset(test, keep)

    @torch.no_grad()
    def _error(self, network: nn.Module, dataset: Dataset[Any]) -> float:
        """Top-1 error (%) of ``network`` in eval mode on ``dataset``, counted over all ranks."""
        world_size = int(self.trainer.world_size)
        sampler = None
        if world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                cast(Sized, dataset), num_replicas=world_size, rank=int(self.trainer.global_rank), shuffle=False
            )
        batch_size = int(getattr(self._datamodule(), "eval_batch_size", 256))
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler)
        was_training = network.training
        network.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in loader:  # LabelledPair
            pred = network(batch.input.to(self.device)).argmax(1)
            counts[0] += (pred != batch.target.to(self.device)).sum()
            counts[1] += len(batch.target)
        network.train(was_training)
        if world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        return float(100.0 * counts[0] / counts[1].clamp_min(1))

    def _rewind_epoch_end(self) -> None:
        """After a min-pass: keep the SCRUB epoch's state and forget error; after the last one, rewind."""
        scrub_epoch, kind = self.pass_at(self.current_epoch)
        if kind != MIN_PASS:  # a min-pass always ends its SCRUB epoch
            return
        if math.isnan(self._rewind_errors[scrub_epoch]):
            self._rewind_errors[scrub_epoch] = self._error(self.model, self._forget_dataset())
            if scrub_epoch < int(self.hparams["epochs"]):  # the final state is the model itself
                self._rewind_states[scrub_epoch] = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
        if scrub_epoch == int(self.hparams["epochs"]) and self._rewind_selected is None:
            self._rewind()

    def _rewind(self) -> None:
        target = self._error(self.model, self._forget_validation_dataset())
        k = select_rewind(self._rewind_errors, target, self.hparams["rewind_rule"])
        if k == 0:
            warnings.warn(
                "SCRUB rewind selected epoch 0: the original model's forget error is the closest to the held-out "
                "error, so the original model is returned",
                stacklevel=2,
            )
            state: Mapping[str, Tensor] = self.teacher.state_dict()
        elif k < int(self.hparams["epochs"]):
            state = self._rewind_states[k]
        else:
            state = {}
        if state:
            with torch.no_grad():
                self.model.load_state_dict(state)
        self._rewind_selected = k
        self._rewind_states = {}
        self._log_epoch("scrub/rewind_epoch", float(k))
        self._log_epoch("scrub/rewind_target_error", target)
        self._log_epoch("scrub/forget_error_selected", float(self._rewind_errors[k]))
