"""UNSIR: error-maximising noise for the forget classes, then impair (noise + retain) and repair (retain)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.datamodules.scenarios import ClassRemoval, SubclassRemoval
from lightning_unlearn.methods.base import (
    MultiStageUnlearningMethod,
    Stage,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.models.normalize import Normalize

_PRESETS = ("corrected", "reference")
#: Seed offsets of the noise draw and of the impair batches' composition.
NOISE_SEED_OFFSET = 4_201
POOL_SEED_OFFSET = 8_803
#: Batch size of the noise stage's single pass over the forget set (it only reads the input shape).
_NOISE_PASS_BATCH = 4096


def noise_objective(logits: Tensor, noise: Tensor, label: int, reg: float) -> tuple[Tensor, Tensor, Tensor]:
    """``J = -CE(logits, label) + reg * mean_i ||N_i||^2``; returns ``(J, CE, mean squared norm)``."""
    target = torch.full((len(logits),), int(label), dtype=torch.long, device=logits.device)
    ce = F.cross_entropy(logits, target)
    sq_norm = noise.flatten(1).pow(2).sum(dim=1).mean()
    return -ce + reg * sq_norm, ce, sq_norm


def _input_statistics(model: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """Mean and std of the classifier's first :class:`Normalize` layer (``None``: no normalisation layer)."""
    for module in model.modules():
        if isinstance(module, Normalize):
            return module.mean, module.std
    return None, None


def error_maximizing_noise(
    model: nn.Module,
    noise: Tensor,
    label: int,
    steps: int,
    lr: float = 0.1,
    reg: float = 0.1,
    *,
    leak: list[Tensor] | None = None,
) -> tuple[Tensor, list[float]]:
    """Optimise ``noise`` (normalised input space) by Adam to minimise :func:`noise_objective` on ``model``.

    The model is fed ``mean + std * N`` so its normalisation layer sees exactly ``N``; the model is used in the
    mode it is in and its parameters' ``.grad`` are never written. With ``leak`` (one tensor per parameter of
    ``model``, in ``model.parameters()`` order), the parameter gradients of ``J`` are added to it at each step,
    as the authors' code leaves them in the model's ``.grad``.

    Returns:
        The optimised noise and the objective ``J`` before each step.
    """
    mean, std = _input_statistics(model)
    shape = (1, -1) + (1,) * (noise.dim() - 2)
    params = [p for p in model.parameters()]
    n = noise.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([n], lr=lr)
    history: list[float] = []
    for _ in range(steps):
        with torch.enable_grad():
            x = n if mean is None or std is None else mean.view(shape) + std.view(shape) * n
            objective, _, _ = noise_objective(model(x), n, label, reg)
            wrt: list[Tensor] = [n, *params] if leak is not None else [n]
            grads = torch.autograd.grad(objective, wrt, allow_unused=True)
        history.append(float(objective.detach()))
        if leak is not None:
            for buf, g in zip(leak, grads[1:], strict=True):
                if g is not None:
                    buf.add_(g.detach())
        n.grad = grads[0]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return n.detach(), history


class UNSIR(MultiStageUnlearningMethod):
    """UNSIR: learn an error-maximising noise per forget class, impair on noise + retain, then repair on retain.

    Stages: ``noise`` (no model update: a tensor of ``noise_batch_size`` inputs per forget class, drawn from the
    seeded generator in normalised input space, is optimised by its own Adam for ``noise_steps`` steps to maximise
    the model's cross-entropy on that class while keeping ``mean ||N_i||^2`` small, ``J = -CE + noise_reg * mean
    ||N_i||^2``), ``impair`` (cross-entropy with a fresh Adam on a pool of the retain sample plus
    ``noise_copies * noise_batch_size`` noise slots per class, each labelled with its forget class) and ``repair``
    (cross-entropy with a fresh Adam on the retain sample alone). The noise lives in a persistent buffer (a resumed
    run restores it, never redraws it) and is broadcast from rank 0 at the end of its stage.

    Regime: multi-stage (manual optimisation; the epoch budget ``1 + impair_epochs + repair_epochs`` follows from
    the stages: ``trainer.max_epochs`` is set from it and the loaders are rebuilt every epoch). Data: the forget set
    once (only its input shape is read), then a seeded labelled retain sample of ``retain_per_class`` samples per
    retained class (capped at the retain set).

    Scenarios: UNSIR needs whole forget classes. Under class removal the noise of each forgotten class is labelled
    with it; under sub-class removal with the coarse class of the forgotten fine class (which its siblings keep),
    and the sample is the whole retain set. Any other scenario (random samples, k instances, noisy labels) raises
    ``ValueError``: there is no forget class to make noise for.

    Impair batches: the retain sample is served in shuffled batches of ``impair_batch_size``; the ``ceil(pool /
    impair_batch_size)`` optimiser steps of the epoch are spread over these loader batches, and each loader batch's
    samples are shuffled with its share of the (seeded, shuffled) noise slots into its steps, so the epoch keeps the
    pool, its step count and its noise share per batch.

    Presets: ``"corrected"`` (default) optimises the noise against the model in eval mode (its buffers unchanged) and
    leaves the model's gradients empty. ``"reference"`` reproduces the authors' code: the noise is optimised against
    the model in train mode (batch-norm statistics of the noise batch, running statistics updated), and the model
    gradients of every noise step are added to the first impair gradient. The authors take the first samples of each
    class in dataset order; here the retain sample is the datamodule's seeded random sample.

    Reference: A. K. Tarun, V. S. Chundawat, M. Mandal, M. Kankanhalli, "Fast Yet Effective Machine Unlearning",
    IEEE Transactions on Neural Networks and Learning Systems, 2023.

    Args:
        model: The trained classifier to unlearn.
        noise_batch_size: Noise inputs per forget class.
        noise_steps: Adam steps of the noise; ``None``: 25 for class removal, 250 for sub-class removal.
        noise_lr: Learning rate of the noise's Adam.
        noise_reg: Weight of the mean squared norm of the noise.
        noise_copies: Times each class's noise batch enters the impair pool.
        retain_per_class: Retain samples per retained class in the impair and repair pool.
        impair_lr: Learning rate of the impair stage's Adam.
        impair_batch_size: Batch size of the impair pool.
        impair_epochs: Epochs of the impair stage.
        repair_lr: Learning rate of the repair stage's Adam.
        repair_batch_size: Batch size of the repair stage.
        repair_epochs: Epochs of the repair stage.
        noise_label: ``"own"`` (each class's noise labelled with it) or ``"first"`` (every noise labelled with the
            first forget class, as one of the authors' codes does).
        preset: ``"corrected"`` or ``"reference"`` (see above).
        seed: Seed of the noise draw and of the impair batches' composition.
        noise_model_mode: ``"eval"`` or ``"train"``: the model's mode while the noise is optimised; ``None``
            follows the preset.
        leak_noise_grads: Add the noise stage's model gradients to the first impair step; ``None`` follows the
            preset.
    """

    noise: Tensor
    noise_labels: Tensor

    def __init__(
        self,
        model: nn.Module,
        noise_batch_size: int = 32,
        noise_steps: int | None = None,
        noise_lr: float = 0.1,
        noise_reg: float = 0.1,
        noise_copies: int = 80,
        retain_per_class: int = 500,
        impair_lr: float = 1e-4,
        impair_batch_size: int = 32,
        impair_epochs: int = 1,
        repair_lr: float = 1e-4,
        repair_batch_size: int = 128,
        repair_epochs: int = 1,
        noise_label: Literal["own", "first"] = "own",
        preset: Literal["corrected", "reference"] = "corrected",
        seed: int = 0,
        noise_model_mode: Literal["eval", "train"] | None = None,
        leak_noise_grads: bool | None = None,
    ) -> None:
        check_integer("noise_batch_size", noise_batch_size, 1)
        check_integer("noise_steps", noise_steps, 0, optional=True)
        check_positive("noise_lr", noise_lr)
        check_positive("noise_reg", noise_reg, allow_zero=True)
        check_integer("noise_copies", noise_copies, 0)
        check_integer("retain_per_class", retain_per_class, 1)
        check_positive("impair_lr", impair_lr)
        check_integer("impair_batch_size", impair_batch_size, 1)
        check_integer("impair_epochs", impair_epochs, 1)
        check_positive("repair_lr", repair_lr)
        check_integer("repair_batch_size", repair_batch_size, 1)
        check_integer("repair_epochs", repair_epochs, 0)
        check_choice("noise_label", noise_label, ("own", "first"))
        check_choice("preset", preset, _PRESETS)
        check_integer("seed", seed)
        if noise_model_mode is not None:
            check_choice("noise_model_mode", noise_model_mode, ("eval", "train"))
        if leak_noise_grads is not None:
            check_choice("leak_noise_grads", leak_noise_grads, (True, False))
        super().__init__(model)
        reference = preset == "reference"
        self.noise_model_mode: str = noise_model_mode or ("train" if reference else "eval")
        self.leak_noise_grads: bool = reference if leak_noise_grads is None else bool(leak_noise_grads)
        self.register_buffer("noise", torch.zeros(0))
        self.register_buffer("noise_labels", torch.zeros(0, dtype=torch.long))
        self._leak: list[Tensor] | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._forget_classes: list[int] = []
        self._noise_steps = 25
        self._sample_size = 1
        self._impair_steps = 1
        self._impair_loader_batches = 1

    # ------------------------------------------------------------------ stages and data
    def stages(self) -> list[Stage]:
        """``noise`` (1 epoch, no model update), ``impair`` and ``repair`` (each over the retain sample)."""
        h = self.hparams
        sample = self._sample_size
        return [
            Stage(
                "noise",
                1,
                Phase(epochs=1, splits=("forget",), labelled=False, shuffle=False, batch_size=_NOISE_PASS_BATCH),
                trains=False,
            ),
            Stage(
                "impair",
                int(h["impair_epochs"]),
                Phase(
                    epochs=1,
                    splits=("retain_sample",),
                    labelled=True,
                    sample_size=sample,
                    batch_size=int(h["impair_batch_size"]),
                ),
            ),
            Stage(
                "repair",
                int(h["repair_epochs"]),
                Phase(
                    epochs=1,
                    splits=("retain_sample",),
                    labelled=True,
                    sample_size=sample,
                    batch_size=int(h["repair_batch_size"]),
                ),
            ),
        ]

    def setup(self, stage: str) -> None:
        """Read the forget classes, the noise step count and the retain sample size from the datamodule."""
        if stage == "fit" and self._trainer is not None:
            datamodule: Any = getattr(self.trainer, "datamodule", None)
            if datamodule is not None and hasattr(datamodule, "split_targets"):
                self._configure_from_data(datamodule)
        super().setup(stage)

    def _configure_from_data(self, datamodule: Any) -> None:
        scenario = getattr(datamodule, "scenario", None)
        if not isinstance(scenario, ClassRemoval | SubclassRemoval):
            raise ValueError(
                "UNSIR needs whole forget classes: scenario must be one of ('class', 'subclass') "
                f"(ClassRemoval, SubclassRemoval), got {type(scenario).__name__}"
            )
        forget_targets = datamodule.split_targets("forget")
        if forget_targets.numel() == 0:
            raise ValueError("UNSIR needs a non-empty forget split")
        self._forget_classes = [int(c) for c in torch.unique(forget_targets).tolist()]
        given = self.hparams["noise_steps"]
        subclass = isinstance(scenario, SubclassRemoval)
        self._noise_steps = int(given) if given is not None else (250 if subclass else 25)
        retain_targets = datamodule.split_targets("retain")
        num_retain = int(retain_targets.numel())
        if num_retain == 0:
            raise ValueError("UNSIR needs a non-empty retain split")
        if subclass:
            self._sample_size = num_retain
        else:
            counts = torch.bincount(retain_targets)
            per_class = torch.clamp(counts[counts > 0], max=int(self.hparams["retain_per_class"]))
            self._sample_size = int(per_class.sum())
        world = max(1, int(self.trainer.world_size))
        local_sample = math.ceil(self._sample_size / world)
        local_noise = math.ceil(self.num_noise_slots / world)
        batch = int(self.hparams["impair_batch_size"])
        self._impair_loader_batches = math.ceil(local_sample / batch)
        self._impair_steps = max(self._impair_loader_batches, math.ceil((local_sample + local_noise) / batch))
        self._local_noise_slots = local_noise

    @property
    def num_noise_slots(self) -> int:
        """Noise slots in the impair pool: ``noise_copies * noise_batch_size`` per forget class."""
        h = self.hparams
        return int(h["noise_copies"]) * int(h["noise_batch_size"]) * max(1, len(self._forget_classes))

    @property
    def impair_steps(self) -> int:
        """Optimiser steps of one impair epoch (``ceil((sample + noise slots) / impair_batch_size)``, per rank)."""
        return self._impair_steps

    # ------------------------------------------------------------------ steps
    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """Noise: record the input shape. Impair: the loader batch's share of pool steps. Repair: one CE step."""
        if stage.name == "noise":
            x = self.split_batch(batch["forget"])[0]
            self._input_shape = tuple(int(s) for s in x.shape[1:])
            return None
        x, y, _ = self.labelled_batch(batch["retain_sample"])
        if stage.name == "repair":
            return self._ce_step(optimizer, x, y, "repair")
        return self._impair_batch(optimizer, x, y, batch_idx)

    def stage_end(self, stage: Stage) -> None:
        """After the noise pass: optimise the noise of every forget class (once; kept on resume)."""
        if stage.name != "noise" or self.noise.numel() > 0:
            return
        if self._input_shape is None:
            raise RuntimeError("UNSIR saw no forget batch, so it does not know the input shape")
        self._make_noise(self._input_shape)

    def _make_noise(self, input_shape: tuple[int, ...]) -> None:
        h = self.hparams
        generator = self.method_generator(NOISE_SEED_OFFSET)
        classes = self._forget_classes
        n = int(h["noise_batch_size"])
        noises = []
        was_training = self.model.training
        self.model.train(self.noise_model_mode == "train")
        params = list(self.model.parameters())
        self._leak = [torch.zeros_like(p) for p in params] if self.leak_noise_grads else None
        try:
            for cls in classes:
                start = torch.randn((n, *input_shape), generator=generator).to(self.device)
                noise, history = error_maximizing_noise(
                    self.model,
                    start,
                    cls,
                    self._noise_steps,
                    float(h["noise_lr"]),
                    float(h["noise_reg"]),
                    leak=self._leak,
                )
                noises.append(noise)
                self._log_noise(noise, cls, history)
        finally:
            self.model.train(was_training)
        stacked = torch.stack(noises)
        if self._trainer is not None and self.trainer.world_size > 1:
            stacked = self.trainer.strategy.broadcast(stacked, src=0)
        self.noise = stacked
        labels = classes if h["noise_label"] == "own" else [classes[0]] * len(classes)
        self.noise_labels = torch.tensor(labels, dtype=torch.long, device=self.device)

    def _log_noise(self, noise: Tensor, label: int, history: list[float]) -> None:
        if self._trainer is None:
            return
        with torch.no_grad():
            mean, std = _input_statistics(self.model)
            shape = (1, -1) + (1,) * (noise.dim() - 2)
            x = noise if mean is None or std is None else mean.view(shape) + std.view(shape) * noise
            was_training = self.model.training
            self.model.eval()
            logits = self.model(x)
            self.model.train(was_training)
            objective, ce, sq_norm = noise_objective(logits, noise, label, float(self.hparams["noise_reg"]))
            prob = F.softmax(logits, dim=1)[:, label].mean()
        for name, value in (
            ("noise_loss", objective),
            ("noise_ce", ce),
            ("noise_sq_norm", sq_norm),
            ("noise_forget_prob", prob),
        ):
            self.log(f"unsir/{name}", value, on_step=False, on_epoch=True, batch_size=1)
        self.log("unsir/noise_steps", float(len(history)), on_step=False, on_epoch=True, batch_size=1, reduce_fx="sum")

    def noise_inputs(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """Pixels and labels of impair-pool noise slots (slot ``j`` of class ``c``: row ``j mod n`` of its noise)."""
        n = int(self.hparams["noise_batch_size"])
        per_class = int(self.hparams["noise_copies"]) * n
        cls = torch.div(slots, per_class, rounding_mode="floor")
        rows = self.noise[cls, slots % n]
        mean, std = _input_statistics(self.model)
        shape = (1, -1) + (1,) * (rows.dim() - 2)
        x = rows if mean is None or std is None else mean.view(shape) + std.view(shape) * rows
        return x, self.noise_labels[cls]

    def impair_plan(self, batch_idx: int, retain_count: int) -> list[tuple[Tensor, Tensor]]:
        """Composition of the pool steps of loader batch ``batch_idx``: per step, retain positions and noise slots.

        The epoch's noise slots are shuffled (seeded by epoch) and dealt to the loader batches in proportion to
        their steps; in each loader batch its samples and noise slots are shuffled together and cut into its steps.
        """
        loader_batches, steps = self._impair_loader_batches, self._impair_steps
        base, extra = divmod(steps, loader_batches)
        step_counts = [base + (1 if k < extra else 0) for k in range(loader_batches)]
        slots_total = self._local_noise_slots
        bounds = [round(slots_total * sum(step_counts[:k]) / steps) for k in range(loader_batches + 1)]
        offset = POOL_SEED_OFFSET + 1_000_003 * int(self.current_epoch) + int(self.global_rank)
        generator = self.method_generator(offset)
        order = torch.randperm(self.num_noise_slots, generator=generator)[:slots_total]
        k = min(batch_idx, loader_batches - 1)
        slots = order[bounds[k] : bounds[k + 1]]
        local = self.method_generator(offset + 7 * (k + 1))
        mixed = torch.randperm(retain_count + len(slots), generator=local)
        plan = []
        for chunk in torch.tensor_split(mixed, max(1, step_counts[k])):
            plan.append((chunk[chunk < retain_count], slots[chunk[chunk >= retain_count] - retain_count]))
        return plan

    def _impair_batch(self, optimizer: Any, x: Tensor, y: Tensor, batch_idx: int) -> Tensor | None:
        last: Tensor | None = None
        for retain_pos, slots in self.impair_plan(batch_idx, len(x)):
            xs, ys = [x[retain_pos.to(x.device)]], [y[retain_pos.to(y.device)]]
            if len(slots):
                x_n, y_n = self.noise_inputs(slots.to(self.noise.device))
                xs.append(x_n.to(x.dtype))
                ys.append(y_n.to(y.device))
            x_b, y_b = torch.cat(xs), torch.cat(ys)
            if len(x_b) == 0:
                continue
            self.log(
                "unsir/impair_noise_fraction", len(slots) / len(x_b), on_step=True, on_epoch=True, batch_size=len(x_b)
            )
            last = self._ce_step(optimizer, x_b, y_b, "impair")
        return last

    def _ce_step(self, optimizer: Any, x: Tensor, y: Tensor, name: str) -> Tensor:
        optimizer.zero_grad()
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.manual_backward(loss)
        if name == "impair" and self._leak is not None:
            for p, leak in zip(self.model.parameters(), self._leak, strict=True):
                if p.grad is not None:
                    p.grad.add_(leak.to(p.grad.device))
            self._leak = None  # only the first impair step carries it
        optimizer.step()
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"train/{name}/acc", acc, on_step=True, on_epoch=True, batch_size=len(x))
        return loss.detach()

    # ------------------------------------------------------------------ optimisers and state
    def configure_stage_optimizer(self, stage: Stage) -> Optimizer | None:
        """A fresh Adam per training stage (betas 0.9/0.999, no weight decay)."""
        lr = float(self.hparams[f"{stage.name}_lr"])
        return torch.optim.Adam(self.model.parameters(), lr=lr)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose noise buffers differ in shape from the empty placeholders."""
        for name in ("noise", "noise_labels"):
            value = state_dict.get(name)
            if value is not None:
                setattr(self, name, torch.empty_like(value))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
