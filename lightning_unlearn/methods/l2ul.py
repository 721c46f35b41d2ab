"""L2UL: instance-wise unlearning with adversarial examples and weight importance, and its continual driver."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.compat import end_fit_after_current_epoch
from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.adversarial import generate_adversarial_set
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    OptimizerCallable,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.methods.importance import (
    estimate_forget_importance,
    importance_penalty,
    normalize_importance,
)
from lightning_unlearn.methods.random_labels import draw_wrong_labels
from lightning_unlearn.models.cut import detect_num_classes

Variant = Literal["naive", "adv", "adv_imp"]
Objective = Literal["misclassify", "relabel"]
L2ULPreset = Literal["corrected", "reference"]
ImportanceMode = Literal["reference", "mas"]
BNMode = Literal["train", "eval"]
Anchor = Literal["request_start", "original"]
ForgetTarget = Literal["label", "prediction"]
TargetSampling = Literal["corrected", "reference"]

VARIANTS: tuple[str, ...] = ("naive", "adv", "adv_imp")
OBJECTIVES: tuple[str, ...] = ("misclassify", "relabel")
PRESETS: tuple[str, ...] = ("corrected", "reference")
IMPORTANCE_MODES: tuple[str, ...] = ("reference", "mas")
BN_MODES: tuple[str, ...] = ("train", "eval")
ANCHORS: tuple[str, ...] = ("request_start", "original")
FORGET_TARGETS: tuple[str, ...] = ("label", "prediction")
#: Seed offsets of the method generator: relabel targets, then the adversarial set of request ``t``.
_RELABEL_SEED_OFFSET = 1
_ADV_SEED_OFFSET = 1000
#: Seed offset of the importance pass of request ``t`` (only stochastic layers draw from it).
_IMP_SEED_OFFSET = 2000
_EVAL_BATCH = 512

__all__ = ["L2UL", "continual_accuracies", "l2ul_loss", "run_continual"]


def l2ul_loss(
    forget_logits: Tensor,
    forget_targets: Tensor,
    adv_logits: Tensor | None = None,
    adv_targets: Tensor | None = None,
    objective: Objective = "misclassify",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """L2UL's unregularised loss.

    Without an adversarial batch (``naive``): ``-CE(B_f, y)`` (``+CE(B_f, y*)`` for relabel). With one (``adv``):
    ``-(n_f/N) CE(B_f, y) + (n_a/N) CE(B_a, y_adv)`` with ``N = n_f + n_a`` (relabel: ``+(n_f/N) CE(B_f, y*)``).

    Returns:
        ``(loss, forget_ce, adv_ce)``: the loss and the unweighted batch-mean cross-entropies.
    """
    sign = -1.0 if objective == "misclassify" else 1.0
    forget_ce = F.cross_entropy(forget_logits, forget_targets)
    if adv_logits is None or adv_targets is None:
        return sign * forget_ce, forget_ce, None
    adv_ce = F.cross_entropy(adv_logits, adv_targets)
    n_f, n_a = forget_logits.shape[0], adv_logits.shape[0]
    total = n_f + n_a
    loss = sign * (n_f / total) * forget_ce + (n_a / total) * adv_ce
    return loss, forget_ce, adv_ce


def _param_key(name: str) -> str:
    return name.replace(".", "__")


class L2UL(GradientUnlearningMethod):
    """L2UL: gradient ascent on the forget instances, regularised by adversarial examples and weight importance.

    ``loss = -(n_f/N) CE(B_f, y) + (n_a/N) CE(B_a, y_adv) + lambda * 1/2 sum Omega~ (theta - theta0)^2``, where
    ``B_a`` are targeted L2-PGD examples of the forget instances labelled with their attack targets and ``Omega~`` is
    one minus the per-tensor min-max-normalised importance of each weight for the forget set. Variants:
    ``naive`` (``-CE(B_f, y)`` only), ``adv`` (+ADV) and ``adv_imp`` (+ADV+IMP, the full method).

    Regime: gradient, automatic optimisation, one SGD optimiser. A pre-pass in ``on_fit_start`` materialises the
    forget split, snapshots ``theta0``, builds the adversarial set (``k * N_adv`` examples, kept in buffers) and
    computes ``Omega~``. Each step uses forget batch ``s mod ceil(k / forget_batch_size)`` (training loader, in
    order) and adversarial batch ``s mod ceil(k N_adv / adv_batch_size)``. After every step the whole forget set is
    evaluated in eval mode; training stops as soon as it is fully misclassified (relabel: fully predicted as ``y*``)
    or after ``max_epochs`` epochs of adversarial batches (of forget batches for ``naive``). On stopping, the
    current trainer epoch is made the last one (``trainer.max_epochs`` too) and validated, so metric callbacks
    report the final model; the trainer's own limits are only a safety net (L2UL declares no epoch budget: the
    trainer's ``max_epochs`` is kept as given, its stopping rule ends the run). Calling ``fit`` again (new trainer)
    runs a new request: ``theta0``, the adversarial set and ``Omega~`` are recomputed (see :func:`run_continual`).

    Data: the labelled forget split only (sequential, unaugmented, with sample indices); no retain data.

    ``preset="reference"`` reproduces the authors' code: targets from classes 0-9 with collisions replaced by
    5, importance gradients accumulated across batches, ``max_epochs + 1`` epochs and, for
    ``naive``, the stopping test only after each pass over the forget set. Each quirk has its own override.
    Both presets keep BN in train mode during steps and the importance pass, ground-truth labels and at least one
    step.

    Reference: S. Cha, S. Cho, D. Hwang, H. Lee, T. Moon, M. Lee, "Learning to Unlearn: Instance-Wise Unlearning
    for Pre-trained Classifiers", AAAI 2024 (arXiv 2301.11578); code ``csm9493/L2UL``.

    Args:
        model: The trained classifier (pixels in [0, 1], normalisation inside the model).
        num_classes: Number of classes ``C``; ``None`` reads ``model.num_classes`` or the ``out_features`` of the
            classifier's final linear layer.
        variant: ``"naive"``, ``"adv"`` or ``"adv_imp"``.
        objective: ``"misclassify"`` (away from the true label) or ``"relabel"`` (towards ``y*``).
        preset: ``"corrected"`` (default) or ``"reference"``.
        optimizer: Optimiser factory; ``None``: SGD(lr 1e-3, momentum 0.9, weight decay 1e-4).
        reg_lambda: Weight ``lambda`` of the importance regulariser (``adv_imp``).
        num_adv_per_instance: ``N_adv``, adversarial examples per forget instance.
        pgd_eps: L2 radius of the attack (pixel space).
        pgd_step: PGD step size ``alpha``.
        pgd_iters: PGD iterations ``T``.
        pgd_rand_init: Random PGD start.
        clip_range: Pixel range of the attack.
        adv_batch_size: Adversarial batch size.
        forget_batch_size: Forget batch size (also of the importance pass and the adversarial pre-pass).
        max_epochs: Epoch cap of the stopping rule (epochs of adversarial batches; of forget batches for naive).
        adv_target_classes: Classes attack targets are drawn from; ``None``: ``C`` (reference preset: 10).
        importance_mode: ``"reference"`` (``|grad of mean ||f(x)|| |`` per batch) or ``"mas"`` (per-sample
            ``|grad ||f(x)||^2|``).
        bn_mode: ``"train"`` (BN batch statistics during steps and importance) or ``"eval"``.
        anchor: ``"request_start"`` (``theta0`` = weights at the start of each request) or ``"original"`` (the
            weights of the first request's start).
        forget_target: Labels of the forget loss: ``"label"`` (ground truth) or ``"prediction"`` (the model's
            prediction at the request start).
        relabel_targets: ``y*`` per forget instance (split order) for ``objective="relabel"``; ``None`` draws them
            uniformly from the other classes with the method's seed.
        target_sampling: Override of the attack target sampler (``None``: preset).
        importance_accumulate: Override of the importance-gradient accumulation (``None``: preset).
        extra_cap_epoch: Override of the extra ``max_epochs + 1`` cap epoch (``None``: preset).
        naive_check_per_pass: Override of ``naive``'s per-pass stopping test (``None``: preset).
        seed: Seed of targets, random PGD starts, relabel targets and any stochastic layer of the importance pass
            (identical on every rank). Under DDP the request state is also broadcast from rank 0, the stopping check
            uses rank 0's BN statistics and its decision is reduced over the ranks, so all ranks stop together.
    """

    train_splits = ("forget",)

    forget_x: Tensor
    forget_labels: Tensor
    forget_goal: Tensor
    adv_x: Tensor
    adv_y: Tensor
    adv_src: Tensor
    l2ul_step: Tensor
    l2ul_done: Tensor
    l2ul_hit_cap: Tensor
    l2ul_requests: Tensor
    anchor_taken: Tensor

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None = None,
        variant: Variant = "adv_imp",
        objective: Objective = "misclassify",
        preset: L2ULPreset = "corrected",
        optimizer: OptimizerCallable | None = None,
        reg_lambda: float = 1.0,
        num_adv_per_instance: int = 20,
        pgd_eps: float = 4.0,
        pgd_step: float = 0.1,
        pgd_iters: int = 100,
        pgd_rand_init: bool = True,
        clip_range: tuple[float, float] = (0.0, 1.0),
        adv_batch_size: int = 256,
        forget_batch_size: int = 32,
        max_epochs: int = 1000,
        adv_target_classes: int | None = None,
        importance_mode: ImportanceMode = "reference",
        bn_mode: BNMode = "train",
        anchor: Anchor = "request_start",
        forget_target: ForgetTarget = "label",
        relabel_targets: list[int] | None = None,
        target_sampling: TargetSampling | None = None,
        importance_accumulate: bool | None = None,
        extra_cap_epoch: bool | None = None,
        naive_check_per_pass: bool | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("variant", variant, VARIANTS)
        check_choice("objective", objective, OBJECTIVES)
        check_choice("preset", preset, PRESETS)
        check_choice("importance_mode", importance_mode, IMPORTANCE_MODES)
        check_choice("bn_mode", bn_mode, BN_MODES)
        check_choice("anchor", anchor, ANCHORS)
        check_choice("forget_target", forget_target, FORGET_TARGETS)
        if target_sampling is not None:
            check_choice("target_sampling", target_sampling, PRESETS)
        if num_classes is None:
            num_classes = detect_num_classes(model)
        check_integer("num_classes", num_classes, 2)
        check_positive("reg_lambda", reg_lambda, allow_zero=True)
        check_positive("pgd_eps", pgd_eps)
        check_positive("pgd_step", pgd_step)
        for name, value, low in (
            ("num_adv_per_instance", num_adv_per_instance, 1),
            ("pgd_iters", pgd_iters, 0),
            ("adv_batch_size", adv_batch_size, 1),
            ("forget_batch_size", forget_batch_size, 1),
            ("max_epochs", max_epochs, 1),
            ("seed", seed, 0),
        ):
            check_integer(name, value, low)
        if (
            not isinstance(clip_range, tuple | list)
            or len(clip_range) != 2
            or not float(clip_range[0]) < float(clip_range[1])
        ):
            raise ValueError(f"clip_range must be (lo, hi) with lo < hi, got {clip_range!r}")
        if relabel_targets is not None:
            if not isinstance(relabel_targets, tuple | list) or not relabel_targets:
                raise ValueError(f"relabel_targets must be a non-empty list of class ids, got {relabel_targets!r}")
            for target in relabel_targets:
                check_integer("relabel_targets entries", target, 0)
            if max(relabel_targets) >= num_classes:
                raise ValueError(f"relabel_targets must lie in [0, {num_classes}), got {relabel_targets!r}")
        check_integer("adv_target_classes", adv_target_classes, 2, optional=True)
        if adv_target_classes is not None and not 2 <= adv_target_classes <= num_classes:
            raise ValueError(f"adv_target_classes must be None or in [2, {num_classes}], got {adv_target_classes!r}")
        super().__init__(model, optimizer=optimizer)
        # the detected value, also when the command line saved the config's None as the hyperparameter
        self.hparams["num_classes"] = num_classes
        reference = preset == "reference"
        self.variant: str = variant
        self.objective: str = objective
        self.target_sampling: str = target_sampling or preset
        if adv_target_classes is None and reference:
            adv_target_classes = min(10, num_classes)
        self.adv_target_classes = adv_target_classes
        self.importance_accumulate = reference if importance_accumulate is None else bool(importance_accumulate)
        self.extra_cap_epoch = reference if extra_cap_epoch is None else bool(extra_cap_epoch)
        self.naive_check_per_pass = reference if naive_check_per_pass is None else bool(naive_check_per_pass)
        self._relabel_targets = None if relabel_targets is None else [int(t) for t in relabel_targets]
        for name in ("forget_x", "adv_x"):
            self.register_buffer(name, torch.zeros(0))
        for name in ("forget_labels", "forget_goal", "adv_y", "adv_src"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long))
        self.register_buffer("l2ul_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("l2ul_requests", torch.zeros((), dtype=torch.long))
        self.register_buffer("l2ul_done", torch.zeros((), dtype=torch.bool))
        self.register_buffer("l2ul_hit_cap", torch.zeros((), dtype=torch.bool))
        self.register_buffer("anchor_taken", torch.zeros((), dtype=torch.bool))
        self.l2ul_anchor = nn.Module()
        self._reg_names: list[str] = []
        if variant == "adv_imp":
            for name, p in self.model.named_parameters():
                if p.requires_grad:
                    self._reg_names.append(name)
                    self.l2ul_anchor.register_buffer("theta0__" + _param_key(name), p.detach().clone())
                    self.l2ul_anchor.register_buffer("omega__" + _param_key(name), torch.ones_like(p))

    #: Buffers whose size depends on the request (empty until the first batch).
    _REQUEST_BUFFERS: tuple[str, ...] = ("forget_x", "adv_x", "forget_labels", "forget_goal", "adv_y", "adv_src")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Size the request buffers as stored before loading (checkpoints, results of spawned DDP processes)."""
        for name in self._REQUEST_BUFFERS:
            stored = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(stored, Tensor) and stored.shape != current.shape:
                setattr(self, name, torch.empty(stored.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ train
    def train_plan(self, max_epochs: int) -> list[Phase]:
        """The forget split, in order, unaugmented, batch ``forget_batch_size``, with sample indices."""
        return [
            Phase(
                epochs=max(1, max_epochs),
                splits=("forget",),
                shuffle=False,
                batch_size=self.hparams["forget_batch_size"],
                labelled=True,
                with_index=True,
            )
        ]

    def on_fit_start(self) -> None:
        """Pre-pass of a request: forget tensors, ``theta0``, adversarial set and ``Omega~`` (kept on resume)."""
        resuming = self.trainer.ckpt_path is not None and self.forget_x.numel() > 0
        if resuming:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "split_dataset"):
            raise RuntimeError("L2UL needs an UnlearningDataModule (with split_dataset) to read the forget split")
        self.prepare_request(datamodule)

    def prepare_request(self, datamodule: Any) -> None:
        """Build the request's state from ``datamodule``'s forget split and the current model."""
        h = self.hparams
        dataset = datamodule.split_dataset("forget", labelled=True)
        items = [dataset[i] for i in range(len(dataset))]
        if not items:
            raise RuntimeError("L2UL: the forget split is empty")
        x = torch.stack([item[0] for item in items]).to(self.device)
        y = torch.stack([item[1] for item in items]).to(self.device, torch.long)
        request = int(getattr(datamodule, "request", 0) or 0)
        self.forget_x = x
        if h["forget_target"] == "prediction":
            y = self._predict(x)
        self.forget_labels = y
        self.forget_goal = self._relabel_goal(y) if self.objective == "relabel" else y.clone()
        # theta0
        if self.variant == "adv_imp" and not (h["anchor"] == "original" and bool(self.anchor_taken)):
            params = dict(self.model.named_parameters())
            for name in self._reg_names:
                getattr(self.l2ul_anchor, "theta0__" + _param_key(name)).copy_(params[name].detach())
            self.anchor_taken.fill_(True)
        # adversarial set
        if self.variant != "naive":
            generator = self.method_generator(_ADV_SEED_OFFSET + request)
            adv_x, adv_y, adv_src = generate_adversarial_set(
                self.model,
                x,
                y,
                h["num_classes"],
                h["num_adv_per_instance"],
                h["forget_batch_size"],
                h["pgd_eps"],
                h["pgd_step"],
                h["pgd_iters"],
                h["pgd_rand_init"],
                (float(h["clip_range"][0]), float(h["clip_range"][1])),
                self.target_sampling,  # type: ignore[arg-type]
                self.adv_target_classes,
                generator,
            )
            self.adv_x, self.adv_y, self.adv_src = adv_x, adv_y, adv_src
        # importance
        if self.variant == "adv_imp":
            raw = estimate_forget_importance(
                self.model,
                x,
                h["forget_batch_size"],
                mode=h["importance_mode"],
                bn_train=h["bn_mode"] == "train",
                accumulate_grads=self.importance_accumulate,
                generator=self.method_generator(_IMP_SEED_OFFSET + request),
            )
            omega = normalize_importance(raw)
            for name in self._reg_names:
                getattr(self.l2ul_anchor, "omega__" + _param_key(name)).copy_(omega[name])
        # Every rank computed the same state from the full forget split and the method's seeded generators; take
        # rank 0's copy anyway so floating-point nondeterminism (thread counts, GPU kernels) cannot split the ranks.
        self._broadcast_from_rank_zero(self._request_tensors())
        self.l2ul_step.zero_()
        self.l2ul_done.fill_(False)
        self.l2ul_hit_cap.fill_(False)
        self.l2ul_requests += 1

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Skip every batch once the stopping rule has fired."""
        return -1 if bool(self.l2ul_done) else None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One L2UL step: adversarial batch first, then the forget batch, two separate forward passes."""
        h = self.hparams
        x_f, _, index = self.split_batch(batch["forget"])
        if index is None:
            raise RuntimeError("L2UL needs forget batches with sample indices (Phase.with_index)")
        goal = self.forget_goal[index.to(self.forget_goal.device)]
        if h["bn_mode"] == "eval":
            self.model.eval()
        adv_logits = adv_targets = None
        if self.variant != "naive":
            j = int(self.l2ul_step) % self.num_adv_batches
            bs = h["adv_batch_size"]
            adv_targets = self.adv_y[j * bs : (j + 1) * bs]
            adv_logits = self(self.adv_x[j * bs : (j + 1) * bs])
        loss, forget_ce, adv_ce = l2ul_loss(self(x_f), goal, adv_logits, adv_targets, self.objective)  # type: ignore[arg-type]
        n = len(x_f)
        self.log("l2ul/forget_loss", forget_ce.detach(), on_step=True, on_epoch=False, batch_size=n)
        if adv_ce is not None:
            self.log("l2ul/adv_loss", adv_ce.detach(), on_step=True, on_epoch=False, batch_size=n)
        if self.variant == "adv_imp":
            reg = importance_penalty(self.model, *self._anchor_and_omega())
            self.log("l2ul/reg_loss", reg.detach(), on_step=True, on_epoch=False, batch_size=n)
            loss = loss + h["reg_lambda"] * reg
        self.log("l2ul/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Count the step, evaluate the forget set in eval mode and apply the stopping rule."""
        if bool(self.l2ul_done):
            return
        self.l2ul_step += 1
        step = int(self.l2ul_step)
        n_forget = self.num_forget_batches
        self.log("l2ul/adv_epoch", step / self.num_epoch_batches, on_step=True, on_epoch=False, batch_size=1)
        check = not (self.variant == "naive" and self.naive_check_per_pass) or step % n_forget == 0
        success = False
        if check:
            # Under DDP each rank updated its BN statistics on its own shard; evaluate rank 0's (the ones DDP
            # broadcasts before the next forward) so every rank judges the same model.
            self._broadcast_from_rank_zero(list(self.model.buffers()))
            predictions = self._predict(self.forget_x)
            misclassified = (predictions != self.forget_labels).float().mean()
            self.log("l2ul/forget_misclassified", misclassified, on_step=True, on_epoch=False, batch_size=1)
            if self.objective == "relabel":
                on_target = (predictions == self.forget_goal).float().mean()
                self.log("l2ul/forget_on_target", on_target, on_step=True, on_epoch=False, batch_size=1)
                success = bool(on_target >= 1.0)
            else:
                success = bool(misclassified >= 1.0)
            # Every rank must take the same decision at the same step, or the others wait forever in a collective.
            success = self._all_ranks_agree(success)
        if success or step >= self.cap_steps:
            self._stop(hit_cap=not success)

    def on_train_end(self) -> None:
        """Warn when the trainer's limits ended training before L2UL's stopping rule."""
        if not bool(self.l2ul_done):
            rank_zero_warn(
                f"L2UL: the trainer stopped after {int(self.l2ul_step)} steps, before the forget set was unlearned "
                f"or the cap of {self.cap_steps} steps; raise trainer.max_epochs / max_steps"
            )

    # ------------------------------------------------------------------ optimiser
    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD(lr 1e-3, momentum 0.9, weight decay 1e-4), as in the reference code."""
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

    # ------------------------------------------------------------------ checkpoint
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resize the request buffers to the saved shapes before the state dict is loaded."""
        state = checkpoint.get("state_dict", {})
        for name in ("forget_x", "forget_labels", "forget_goal", "adv_x", "adv_y", "adv_src"):
            if name in state:
                setattr(self, name, torch.empty_like(state[name], device=self.device))

    # ------------------------------------------------------------------ helpers
    @property
    def num_forget_batches(self) -> int:
        """``ceil(k / forget_batch_size)``."""
        return max(1, math.ceil(self.forget_x.shape[0] / self.hparams["forget_batch_size"]))

    @property
    def num_adv_batches(self) -> int:
        """``ceil(k N_adv / adv_batch_size)``."""
        return max(1, math.ceil(self.adv_x.shape[0] / self.hparams["adv_batch_size"]))

    @property
    def num_epoch_batches(self) -> int:
        """Steps of one L2UL epoch: adversarial batches (forget batches for ``naive``)."""
        return self.num_forget_batches if self.variant == "naive" else self.num_adv_batches

    @property
    def cap_steps(self) -> int:
        """Step cap: ``max_epochs`` (+1 with the extra cap epoch) epochs of :attr:`num_epoch_batches`."""
        return (self.hparams["max_epochs"] + int(self.extra_cap_epoch)) * self.num_epoch_batches

    def _request_tensors(self) -> list[Tensor]:
        """The request's state: forget tensors, adversarial set, ``theta0`` and ``Omega~``."""
        tensors = [self.forget_x, self.forget_labels, self.forget_goal, self.adv_x, self.adv_y, self.adv_src]
        if self.variant == "adv_imp":
            anchor, omega = self._anchor_and_omega()
            tensors += [anchor[n] for n in self._reg_names] + [omega[n] for n in self._reg_names]
        return tensors

    def _distributed(self) -> bool:
        trainer = self._trainer
        return trainer is not None and int(trainer.world_size) > 1 and dist.is_available() and dist.is_initialized()

    def _broadcast_from_rank_zero(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values (no-op without a process group)."""
        if not self._distributed():
            return
        for tensor in tensors:
            if tensor.numel() > 0:
                dist.broadcast(tensor, src=0)

    def _all_ranks_agree(self, decision: bool) -> bool:
        """``decision`` reduced with ``all`` over the ranks (the strategy's boolean reduction)."""
        if self._trainer is None:
            return decision
        return bool(self.trainer.strategy.reduce_boolean_decision(decision, all=True))

    def _anchor_and_omega(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        anchor = {n: getattr(self.l2ul_anchor, "theta0__" + _param_key(n)) for n in self._reg_names}
        omega = {n: getattr(self.l2ul_anchor, "omega__" + _param_key(n)) for n in self._reg_names}
        return anchor, omega

    @torch.no_grad()
    def _predict(self, x: Tensor) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            preds = [self.model(x[i : i + _EVAL_BATCH]).argmax(1) for i in range(0, x.shape[0], _EVAL_BATCH)]
        finally:
            self.model.train(was_training)
        return torch.cat(preds)

    def _relabel_goal(self, y: Tensor) -> Tensor:
        c = self.hparams["num_classes"]
        if self._relabel_targets is not None:
            goal = torch.as_tensor(self._relabel_targets, dtype=torch.long)
            if goal.numel() != y.numel():
                raise ValueError(f"relabel_targets has {goal.numel()} entries for {y.numel()} forget instances")
            if bool(((goal < 0) | (goal >= c)).any()):
                raise ValueError(f"relabel_targets must lie in [0, {c})")
            return goal.to(y.device)
        generator = self.method_generator(_RELABEL_SEED_OFFSET + int(self.l2ul_requests))
        return draw_wrong_labels(y, c, generator)

    def _stop(self, hit_cap: bool) -> None:
        self.l2ul_done.fill_(True)
        self.l2ul_hit_cap.fill_(hit_cap)
        self.log("l2ul/stopped_step", float(self.l2ul_step), on_step=True, on_epoch=False, batch_size=1)
        self.log("l2ul/hit_cap", float(hit_cap), on_step=True, on_epoch=False, batch_size=1)
        if self._trainer is None:
            return
        trainer = self.trainer
        # Make this epoch the last one: the trainer reports it as such and validates the final model here.
        end_fit_after_current_epoch(trainer)
        if trainer.check_val_every_n_epoch is not None:
            trainer.check_val_every_n_epoch = 1


@torch.no_grad()
def _accuracy(model: nn.Module, dataset: Any, device: torch.device) -> tuple[int, int]:
    correct, total = 0, 0
    for start in range(0, len(dataset), _EVAL_BATCH):
        items = [dataset[i] for i in range(start, min(start + _EVAL_BATCH, len(dataset)))]
        x = torch.stack([item.input for item in items]).to(device)
        y = torch.stack([item.target for item in items]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(items)
    return correct, total


def continual_accuracies(model: nn.Module, datamodule: Any, request: int) -> dict[str, float]:
    """Accuracies (%) after request ``request``: current and earlier forget sets, their union, retain, test.

    Keys: ``forget`` (``F_t``), ``forget_req{s}`` for ``s < t``, ``forget_previous`` (union of earlier sets),
    ``forget_all`` (union up to ``t``), ``retain`` (``D`` minus every forget set so far), ``test``, and the
    sizes ``retain_size`` / ``forget_all_size``.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        counts: dict[str, tuple[int, int]] = {}
        names = ["forget", *[f"forget_req{s}" for s in range(request)], "retain", "test"]
        for name in names:
            counts[name] = _accuracy(model, datamodule.split_dataset(name, labelled=True), device)
        if request > 0:
            counts["forget_previous"] = _accuracy(model, datamodule.split_dataset("forget_previous"), device)
        prev = counts.get("forget_previous", (0, 0))
        counts["forget_all"] = (counts["forget"][0] + prev[0], counts["forget"][1] + prev[1])
        for name, (correct, total) in counts.items():
            out[name] = 100.0 * correct / max(total, 1)
        out["retain_size"] = float(counts["retain"][1])
        out["forget_all_size"] = float(counts["forget_all"][1])
    finally:
        model.train(was_training)
    return out


def run_continual(
    method: L2UL,
    datamodule: Any,
    requests: Sequence[int] | None,
    trainer_factory: Callable[[int], Trainer],
) -> list[dict[str, float]]:
    """Continual unlearning: one ``fit`` per request on the same module, each with a fresh trainer.

    For request ``t`` the datamodule's ``request`` is set to ``t`` (a ``Continual`` scenario), a trainer is built by
    ``trainer_factory(t)`` (so a fresh optimiser is created) and ``fit`` runs: ``on_fit_start`` re-anchors
    ``theta0`` (unless ``anchor="original"``) and recomputes the adversarial set and ``Omega~`` from ``F_t`` with
    the current model; earlier forget sets are never trained on. After each request the accuracies of
    :func:`continual_accuracies` plus ``steps`` and ``hit_cap`` are logged to the trainer's loggers as
    ``l2ul/continual/req{t}/<name>`` and returned.

    Args:
        method: The L2UL module (its model is updated request after request).
        datamodule: An ``UnlearningDataModule`` with a ``Continual`` scenario.
        requests: Request indices in order; ``None``: all requests of the scenario.
        trainer_factory: Builds the trainer of request ``t``.

    Returns:
        One dict of metrics per request.
    """
    if not isinstance(method, L2UL):
        raise TypeError(f"run_continual needs an L2UL method, got {type(method).__name__}")
    if requests is None:
        scenario = getattr(datamodule, "scenario", None)
        count = len(getattr(scenario, "requests", ())) or 1
        requests = list(range(count))
    results: list[dict[str, float]] = []
    for t in requests:
        datamodule.request = int(t)
        trainer = trainer_factory(int(t))
        trainer.fit(method, datamodule=datamodule)
        metrics = continual_accuracies(method.model, datamodule, int(t))
        metrics["steps"] = float(method.l2ul_step)
        metrics["hit_cap"] = float(bool(method.l2ul_hit_cap))
        results.append(metrics)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"l2ul/continual/req{t}/{k}": v for k, v in metrics.items()}, step=int(trainer.global_step)
                )
    return results
