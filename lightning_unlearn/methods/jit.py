"""JiT: zero-shot unlearning by minimising a local Lipschitz ratio around the forget inputs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import GradientUnlearningMethod, OptimizerCallable, check_choice, check_positive
from lightning_unlearn.methods.budget import EpochBudget
from lightning_unlearn.methods.ssd import GlobalBatches, per_rank_batch_size
from lightning_unlearn.models.normalize import normalization_stats
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_integer

__all__ = ["JiT"]

PRESETS: tuple[str, ...] = ("default", "reference")
MODEL_MODES: tuple[str, ...] = ("eval", "train")
CLIPS: tuple[str, ...] = ("sample", "batch", "none")
NOISE_RNGS: tuple[str, ...] = ("generator", "global_cpu")
REDUCTIONS: tuple[str, ...] = ("sum", "mean")

#: Switch values of each preset (the reference-code quirks: accumulate_grads, model_mode, clip, noise_rng, reduction).
PRESET_SWITCHES: dict[str, dict[str, Any]] = {
    "default": {
        "accumulate_grads": False,
        "model_mode": "eval",
        "clip": "sample",
        "noise_rng": "generator",
        "reduction": "sum",
    },
    "reference": {
        "accumulate_grads": True,
        "model_mode": "train",
        "clip": "batch",
        "noise_rng": "global_cpu",
        "reduction": "sum",
    },
}


class JiT(GradientUnlearningMethod):
    """JiT (Just in Time): one SGD pass over the forget inputs that flattens the model around each of them.

    For a forget input ``x`` in normalised coordinates, ``N`` perturbed copies ``x'_n = clip(x + xi_n)`` with
    ``xi_n ~ N(0, sigma^2 I)`` give the loss ``l(x) = (1/N) sum_n ||f(x) - sg[f(x'_n)]||_2 / ||x - x'_n||_2``
    (logits, plain L2 norms, post-clip distance); a batch's loss is the **sum** over its samples (``reduction``).
    Noise and clipping act in the classifier's normalised space (through its ``normalize`` statistics).

    Regime: gradient (automatic optimisation), exactly one epoch (its epoch budget: ``trainer.max_epochs`` is set
    to 1): one step per forget batch of the datamodule's ``batch_size`` (the global batch ``B``), unshuffled. Data:
    forget **inputs only** (zero-shot: no labels, no retain data). Default optimiser: plain SGD with ``lr`` (no
    momentum, no decay).
    Budget: ``ceil(|forget| / B)`` steps; with the batch loss a sum over samples, the total update scales with
    ``lr * |forget|`` and hardly with ``B``, so ``lr`` is the knob (the published value moves too much on small
    networks; the shipped mnist5k configs carry measured values).

    ``preset="reference"`` reproduces the authors' code (single process): gradients zeroed once before the
    pass (step ``k`` applies batches ``1..k``), train mode (dropout active), clipping to the whole batch's
    scalar min/max, noise from the global CPU RNG. The default zeroes every step, enforces eval mode, clips per
    sample and draws noise from a generator seeded by ``(seed, rank)``. Each switch overrides the preset.

    Logged per step: ``jit/lipschitz_loss``, ``jit/ratio_mean``, ``jit/input_dist_mean``,
    ``jit/output_dist_mean`` (cost through :class:`~lightning_unlearn.callbacks.UnlearningCost`).

    Reference: J. Foster, K. Fogarty, S. Schoepf, Z. Dugue, C. Öztireli, A. Brintrup, "An Information Theoretic
    Approach to Machine Unlearning", TMLR 2025, arXiv:2402.01401; code ``jwf40/Information-Theoretic-Unlearning``.

    Args:
        model: The trained classifier to unlearn.
        sigma: Standard deviation of the Gaussian perturbation, in normalised units (> 0).
        lr: Learning rate ``eta`` of the default SGD optimiser (> 0).
        n_perturbations: Number ``N`` of perturbed copies per input (>= 1).
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        preset: ``"default"`` (corrected) or ``"reference"`` (authors' code).
        seed: Seed of the noise generator (combined with the rank).
        accumulate_grads: Zero gradients only before the first step; ``None``: from the preset.
        model_mode: ``"eval"`` or ``"train"`` mode during the pass; ``None``: from the preset.
        clip: Clip range of the perturbed inputs: ``"sample"`` (each sample's min/max), ``"batch"`` (the whole
            batch's) or ``"none"``; ``None``: from the preset.
        noise_rng: ``"generator"`` (seeded) or ``"global_cpu"`` (``torch.randn``); ``None``: from the preset.
        reduction: ``"sum"`` (authors') or ``"mean"`` over the batch; ``None``: from the preset.
    """

    needs_labels = False
    train_splits = ("forget",)

    def __init__(
        self,
        model: nn.Module,
        sigma: float = 0.5,
        lr: float = 3e-4,
        n_perturbations: int = 25,
        optimizer: OptimizerCallable | None = None,
        preset: Literal["default", "reference"] = "default",
        seed: int = 0,
        accumulate_grads: bool | None = None,
        model_mode: Literal["eval", "train"] | None = None,
        clip: Literal["sample", "batch", "none"] | None = None,
        noise_rng: Literal["generator", "global_cpu"] | None = None,
        reduction: Literal["sum", "mean"] | None = None,
    ) -> None:
        check_positive("sigma", sigma)
        check_positive("lr", lr)
        check_integer("n_perturbations", n_perturbations, 1)
        check_choice("preset", preset, PRESETS)
        check_integer("seed", seed)
        defaults = PRESET_SWITCHES[preset]
        accumulate_grads = defaults["accumulate_grads"] if accumulate_grads is None else bool(accumulate_grads)
        model_mode = defaults["model_mode"] if model_mode is None else model_mode
        clip = defaults["clip"] if clip is None else clip
        noise_rng = defaults["noise_rng"] if noise_rng is None else noise_rng
        reduction = defaults["reduction"] if reduction is None else reduction
        check_choice("model_mode", model_mode, MODEL_MODES)
        check_choice("clip", clip, CLIPS)
        check_choice("noise_rng", noise_rng, NOISE_RNGS)
        check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(model, optimizer=optimizer)
        # Save the resolved switches (not the ``None`` placeholders).
        for key, value in (
            ("accumulate_grads", accumulate_grads),
            ("model_mode", model_mode),
            ("clip", clip),
            ("noise_rng", noise_rng),
            ("reduction", reduction),
        ):
            self.hparams[key] = value
        self.sigma = float(sigma)
        self.n_perturbations = n_perturbations
        self.accumulate_grads = accumulate_grads
        self.model_mode: str = model_mode
        self.clip: str = clip
        self.noise_rng: str = noise_rng
        self.reduction: str = reduction
        self._generator: torch.Generator | None = None
        self._global: GlobalBatches | None = None
        self._global_batch_size = 1

    # ------------------------------------------------------------------ data
    def _world_size(self) -> int:
        return 1 if self._trainer is None else int(self.trainer.world_size)

    def epoch_budget(self) -> EpochBudget:
        """Exactly one epoch: a single pass over the forget set."""
        return EpochBudget(1, detail="one pass over the forget set")

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One unshuffled, unlabelled pass over ``forget`` with global batch ``B`` (``B / W`` per rank)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self._global_batch_size = int(getattr(datamodule, "batch_size", 128))
        batch = per_rank_batch_size(self._global_batch_size, self._world_size())
        return [Phase(epochs=1, splits=("forget",), shuffle=False, labelled=False, batch_size=batch)]

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """Seed the noise generator from ``(seed, rank)``; warn when the reference preset runs on several ranks."""
        world = self._world_size()
        if world > 1 and self.hparams["preset"] == "reference":
            rank_zero_warn("JiT preset='reference' reproduces the single-process code; running on several processes")
        seed = int(self.hparams["seed"])
        self._generator = seeded_generator(seed * 1_000_003, self.global_rank)
        self._global = None
        if world > 1:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "split_dataset"):
                raise RuntimeError("JiT under DDP needs an UnlearningDataModule")
            self._global = GlobalBatches(datamodule, "forget", False, self._global_batch_size, self.global_rank, world)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Lipschitz loss of one forget batch (times ``W`` under DDP, so averaging gives the global sum)."""
        # Under DDP Lightning shuffles and pads the loader: read this rank's shard of global batch k instead.
        element = self._global.batch(batch_idx, self.device) if self._global is not None else batch["forget"]
        if element is None:
            element = self.split_batch(batch["forget"])[0][:0]
        x = self.split_batch(element)[0]
        self.model.train(self.model_mode == "train")
        denominator = None
        if self._global is not None and self.reduction == "mean":  # the mean over the *global* batch
            total = len(self._global.dataset)
            denominator = min(self._global_batch_size, total - batch_idx * self._global_batch_size)
        loss, stats = self.lipschitz_loss(x, denominator)
        n = max(len(x), 1)
        self.log("jit/lipschitz_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for key, value in stats.items():
            self.log(f"jit/{key}", value, on_step=True, on_epoch=True, batch_size=n)
        return loss * self._world_size()

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Optimizer) -> None:
        """Zero gradients every step, or only before the first step with ``accumulate_grads``."""
        if self.accumulate_grads and batch_idx > 0:
            return
        optimizer.zero_grad()

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """Plain SGD with the method's ``lr`` (no momentum, no weight decay)."""
        return torch.optim.SGD(params, lr=self.hparams["lr"], momentum=0.0, weight_decay=0.0)

    # ------------------------------------------------------------------ loss
    def _noise(self, shape: torch.Size, like: Tensor) -> Tensor:
        if self.noise_rng == "global_cpu":
            noise = torch.randn(shape)
        else:
            if self._generator is None:
                self._generator = seeded_generator(int(self.hparams["seed"]) * 1_000_003)
            noise = torch.randn(shape, generator=self._generator)
        return noise.to(device=like.device, dtype=like.dtype)

    def lipschitz_loss(self, x: Tensor, denominator: int | None = None) -> tuple[Tensor, dict[str, float]]:
        """The batch loss ``sum_i (1/N) sum_n ||f(x_i) - sg[f(x'_in)]|| / ||z_i - z'_in||`` and its statistics.

        ``x`` holds pixels; perturbation and clipping act on ``z = (x - mean) / std`` and the model sees
        ``mean + std * z'``. With ``reduction="mean"`` the sum is divided by ``denominator`` (default: the batch
        size; under DDP the global batch size).
        """
        stats = normalization_stats(self.model)
        if stats is not None:
            mean = stats[0].to(x).view(1, -1, *([1] * (x.dim() - 2)))
            std = stats[1].to(x).view(1, -1, *([1] * (x.dim() - 2)))
        else:
            mean = torch.zeros((), dtype=x.dtype, device=x.device)
            std = torch.ones((), dtype=x.dtype, device=x.device)
        if len(x) == 0:
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0
            nan = float("nan")
            return torch.as_tensor(zero), {"ratio_mean": nan, "input_dist_mean": nan, "output_dist_mean": nan}
        z = (x - mean) / std
        out = self.model(x)
        flat = z.flatten(1)
        if self.clip == "sample":
            shape = (-1,) + (1,) * (z.dim() - 1)
            lo, hi = flat.min(dim=1).values.view(shape), flat.max(dim=1).values.view(shape)
        elif self.clip == "batch":
            lo, hi = z.min(), z.max()
        total = torch.zeros(len(x), dtype=out.dtype, device=out.device)
        in_sum = out_sum = 0.0
        for _ in range(self.n_perturbations):
            z2 = z + self.sigma * self._noise(z.shape, z)
            if self.clip != "none":
                z2 = torch.maximum(torch.minimum(z2, hi), lo)
            with torch.no_grad():
                out2 = self.model(mean + std * z2)
            num = (out - out2).flatten(1).norm(dim=1)
            den = (z - z2).flatten(1).norm(dim=1)
            total = total + num / den
            in_sum += float(den.detach().sum())
            out_sum += float(num.detach().sum())
        per_sample = total / self.n_perturbations
        loss = per_sample.sum()
        if self.reduction == "mean":
            loss = loss / (denominator if denominator is not None else len(x))
        count = len(x) * self.n_perturbations
        return loss, {
            "ratio_mean": float(per_sample.detach().mean()),
            "input_dist_mean": in_sum / count,
            "output_dist_mean": out_sum / count,
        }
