"""Selective Synaptic Dampening (SSD) and its label-free variant (LFSSD): importance passes and one dampening edit."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import default_collate

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.datamodules.samplers import global_batch_shards
from lightning_unlearn.errors import load_error_reason
from lightning_unlearn.hints import warn_no_effect
from lightning_unlearn.methods.base import OnePassUnlearningMethod, Stage, check_choice, check_integer, check_positive

__all__ = ["LFSSD", "NO_EFFECT_FRACTION", "SSD", "GlobalBatches", "dampen_", "per_rank_batch_size"]

IMPORTANCE_MODES: tuple[str, ...] = ("batch", "per_sample")
FORGET = "forget"
#: Below this dampened fraction the edit is reported as having (almost) no effect: a warning names ``alpha`` and
#: ``lambda_``. The tuned class-removal preset on the embedded digits dampens about 3 % of the parameters; the
#: published values on a user's CNN dampened 0.008 % and changed no metric.
NO_EFFECT_FRACTION = 1e-3
FULL = "retain+forget"


def per_rank_batch_size(global_batch_size: int, world_size: int) -> int:
    """Per-rank loader batch size that makes Lightning's unshuffled ``DistributedSampler`` serve global batches.

    With ``B / W`` samples per rank, Lightning's padded ``DistributedSampler`` yields exactly ``ceil(n / B)``
    batches per rank, one training step per global batch (:class:`GlobalBatches` supplies their content).

    Raises:
        ValueError: If ``world_size`` does not divide ``global_batch_size``.
    """
    if world_size <= 1:
        return global_batch_size
    if global_batch_size % world_size:
        raise ValueError(
            f"the global batch size ({global_batch_size}) must be a multiple of the number of processes "
            f"({world_size}) so every global batch is split exactly across ranks"
        )
    return global_batch_size // world_size


class GlobalBatches:
    """This rank's shard of every global batch of an unshuffled pass over one split.

    Lightning gives every training loader a *shuffled*, padded ``DistributedSampler`` under DDP, so the loader's
    own batches cannot reproduce the single-process batches. A method reads its shard of global batch ``k``
    here instead: positions ``[kB, min((k+1)B, n))`` with ``(p - kB) mod W == rank``
    (:func:`~lightning_unlearn.datamodules.samplers.global_batch_shards`): no padding, no duplicates, possibly
    empty. The loader (per-rank batch ``B / W``, see :func:`per_rank_batch_size`) only drives the steps.

    Args:
        datamodule: The unlearning datamodule (``split_dataset``).
        name: Split name (``forget``, ``retain+forget``, ...).
        labelled: Whether elements carry labels.
        batch_size: Global batch size ``B``.
        rank: This rank.
        world_size: Number of ranks ``W``.
    """

    def __init__(self, datamodule: Any, name: str, labelled: bool, batch_size: int, rank: int, world_size: int) -> None:
        augment = bool(getattr(datamodule, "augment_unlearning", False))
        self.dataset = datamodule.split_dataset(name, labelled=labelled, augment=augment)
        self.labelled = labelled
        self.shards = global_batch_shards(len(self.dataset), batch_size, rank, world_size)

    def __len__(self) -> int:
        return len(self.shards)

    def batch(self, k: int, device: torch.device) -> Any:
        """Collated shard of global batch ``k`` on ``device`` (``None`` once the pass is over)."""
        if k >= len(self.shards):
            return None
        positions = self.shards[k] or [0]
        items = [self.dataset[i] for i in positions]
        batch = default_collate(items)  # keeps the dataset's named batch type
        if isinstance(batch, Tensor):
            return (batch if self.shards[k] else batch[:0]).to(device)
        # an empty shard keeps shapes and dtypes, with no samples
        parts = [(t if self.shards[k] else t[:0]).to(device) for t in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else parts


def dampen_(
    param: Tensor, importance_full: Tensor, importance_forget: Tensor, alpha: float, lambda_: float
) -> tuple[Tensor, Tensor]:
    """Apply SSD's dampening to ``param`` in place and return ``(selected, beta)``.

    A scalar ``j`` is selected iff ``I_f[j] > alpha * I_D[j]`` (strict); it becomes ``beta[j] * theta[j]`` with
    ``beta[j] = min(lambda_ * I_D[j] / I_f[j], 1)``. Unselected scalars stay bit-identical (their ``beta`` is 1).
    """
    selected = importance_forget > alpha * importance_full
    safe = torch.where(selected, importance_forget, torch.ones_like(importance_forget))
    beta = torch.where(selected, (lambda_ * importance_full / safe).clamp(max=1.0), torch.ones_like(safe))
    with torch.no_grad():
        param.copy_(torch.where(selected, param * beta.to(param.dtype), param))
    return selected, beta


class SSD(OnePassUnlearningMethod):
    """Selective Synaptic Dampening: dampen the parameters far more important to the forget set than to ``D``.

    Two importance estimates, both in eval mode: ``I_f`` over the forget set and ``I_D`` over the whole training
    set ``D = retain + forget`` (retain first, unshuffled). The default ``importance="batch"`` is the authors'
    estimator: the mean over global batches of the squared batch-mean gradient of the cross-entropy (fixed global
    batch ``importance_batch_size``, identical on 1 and W processes). ``"per_sample"`` averages squared
    per-sample gradients instead (batch-size independent, another scale: re-tune ``alpha``). Then every scalar
    parameter with ``I_f > alpha * I_D`` is multiplied by ``min(lambda_ * I_D / I_f, 1)``; buffers are untouched.

    Regime: gradient-free, one statistics epoch (its epoch budget) that serves both passes side by side
    (``forget`` and ``retain+forget``, ``max_size`` mode), then one edit; no optimiser. Data: the labelled forget
    and retain sets (inputs only for :class:`LFSSD`). With ``full_importance_path`` an existing file supplies
    ``I_D`` (only the forget pass runs); a missing file is written after the pass.

    Logged: ``ssd/selected_fraction``, ``ssd/dampened_fraction``, ``ssd/zeroed_count``, ``ssd/beta_mean``,
    ``ssd/importance_forget_mean``, ``ssd/importance_full_mean``, ``ssd/importance_forget_s``,
    ``ssd/importance_full_s`` (the :class:`~lightning_unlearn.callbacks.UnlearningCost` callback logs
    ``cost/unlearn_time_s`` and ``cost/optimizer_steps``, always 0). An edit that dampens less than
    :data:`NO_EFFECT_FRACTION` of the parameters warns, naming ``alpha`` and ``lambda_``: the published values
    often select nothing on another network.

    Reference: J. Foster, S. Schoepf, A. Brintrup, "Fast Machine Unlearning Without Retraining Through Selective
    Synaptic Dampening", AAAI 2024, arXiv:2308.07707; code ``if-loops/selective-synaptic-dampening``.

    Args:
        model: The trained classifier to unlearn.
        alpha: Selection threshold: select where ``I_f > alpha * I_D`` (> 0).
        lambda_: Dampening constant of ``beta = min(lambda_ * I_D / I_f, 1)`` (> 0).
        importance: ``"batch"`` (authors' estimator) or ``"per_sample"``.
        importance_batch_size: Global batch size ``B`` of the importance passes (the loaders' batch size; under
            DDP each rank reads ``B / W``).
        full_importance_path: File with a cached ``I_D`` (``{parameter name: tensor}``); read when it exists,
            written after the pass otherwise. ``None``: always compute ``I_D``.
        label_free: Use the label-free importance of :class:`LFSSD`.
    """

    method_name: ClassVar[str] = "ssd"

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 10.0,
        lambda_: float = 1.0,
        importance: Literal["batch", "per_sample"] = "batch",
        importance_batch_size: int = 64,
        full_importance_path: str | None = None,
        label_free: bool = False,
    ) -> None:
        check_positive("alpha", alpha)
        check_positive("lambda_", lambda_)
        check_choice("importance", importance, IMPORTANCE_MODES)
        check_integer("importance_batch_size", importance_batch_size, 1)
        if full_importance_path is not None and (not isinstance(full_importance_path, str) or not full_importance_path):
            raise ValueError(f"full_importance_path must be a file path or None, got {full_importance_path!r}")
        super().__init__(model)
        self.alpha = float(alpha)
        self.lambda_ = float(lambda_)
        self.importance = importance
        self.importance_batch_size = importance_batch_size
        self.full_importance_path = full_importance_path
        self.label_free = bool(label_free)
        self._cached_full: dict[str, Tensor] | None = None
        self._reset_statistics()

    # ------------------------------------------------------------------ data
    def _world_size(self) -> int:
        if self._trainer is None:
            return 1
        return int(self.trainer.world_size)

    def _passes(self) -> tuple[str, ...]:
        return (FORGET,) if self._cached_full is not None else (FORGET, FULL)

    def stages(self) -> list[Stage]:
        """One statistics stage serving the forget pass and, unless cached, the ``retain+forget`` pass."""
        phase = Phase(
            epochs=1,
            splits=self._passes(),
            mode="max_size",
            shuffle=False,
            batch_size=per_rank_batch_size(self.importance_batch_size, self._world_size()),
            labelled=not self.label_free,
        )
        return [Stage("statistics", 1, phase, trains=False)]

    def setup(self, stage: str) -> None:
        """Load a cached ``I_D`` (when ``full_importance_path`` exists), then install the plan."""
        path = self.full_importance_path
        if stage == "fit" and path is not None and Path(path).is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # refused globals (UnpicklingError), truncated zip (RuntimeError), EOFError
                raise ValueError(
                    f"cannot read the cached full-set importance {path} ({type(err).__name__}: "
                    f"{load_error_reason(err)}); it must be a "
                    "file written by SSD (plain tensors only, loaded with weights_only=True); delete it to recompute it"
                ) from err
            params = dict(self.model.named_parameters())
            if (
                not isinstance(state, Mapping)
                or set(state) != set(params)
                or any(not isinstance(v, Tensor) or v.shape != params[k].shape for k, v in state.items())
            ):
                raise ValueError(
                    f"{path} does not hold one importance tensor per parameter of the classifier, shaped like it "
                    f"(expected keys {sorted(params)}); delete it to recompute it"
                )
            self._cached_full = {k: v.detach().to(torch.float32) for k, v in state.items()}
        super().setup(stage)

    # ------------------------------------------------------------------ statistics
    def _reset_statistics(self) -> None:
        self.importance_forget: dict[str, Tensor] = {}
        self.importance_full: dict[str, Tensor] = {}
        self._sums: dict[str, dict[str, Tensor]] = {}
        self._counts: dict[str, int] = {}
        self._sample_counts: dict[str, int] = {}
        self._seconds: dict[str, float] = {FORGET: 0.0, FULL: 0.0}
        self._global: dict[str, GlobalBatches] = {}

    def sample_losses(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Per-sample objective: cross-entropy (SSD) or squared L2 norm of the logits (LFSSD)."""
        logits = self.model(x)
        if self.label_free:
            return logits.pow(2).sum(dim=1)
        if y is None:
            raise RuntimeError("SSD needs labelled batches (use LFSSD for inputs only)")
        return F.cross_entropy(logits, y, reduction="none")

    def _accumulate_term(self, grad: Tensor) -> Tensor:
        return grad.abs() if self.label_free else grad.pow(2)

    def _params(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.model.named_parameters())

    def _grads(self, loss: Tensor, params: list[tuple[str, nn.Parameter]]) -> list[Tensor]:
        trainable = [p for _, p in params if p.requires_grad]
        grads = torch.autograd.grad(loss, trainable, allow_unused=True) if loss.requires_grad and trainable else []
        out: list[Tensor] = []
        it = iter(grads)
        for _, p in params:
            g = next(it) if p.requires_grad and loss.requires_grad else None
            out.append(torch.zeros_like(p) if g is None else g.detach())
        return out

    def on_train_epoch_start(self) -> None:
        """Under DDP, index this rank's shard of every global batch."""
        self._global = {}
        world = self._world_size()
        if world > 1:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "split_dataset"):
                raise RuntimeError(f"{type(self).__name__} under DDP needs an UnlearningDataModule")
            for name in self._passes():
                self._global[name] = GlobalBatches(
                    datamodule, name, not self.label_free, self.importance_batch_size, self.global_rank, world
                )
        super().on_train_epoch_start()

    def accumulate(self, batch: Any, batch_idx: int) -> None:
        """Add the importance of one global batch for each pass present in ``batch``."""
        self.model.eval()
        for name in (FORGET, FULL):
            if self._global:
                element = self._global[name].batch(batch_idx, self.device) if name in self._global else None
            else:
                element = batch.get(name)
            if element is None:
                continue
            start = time.perf_counter()
            if self.label_free:
                x, y = self.split_batch(element)[0], None
            else:
                x, y, _ = self.labelled_batch(element)
            with torch.enable_grad():
                if self.importance == "batch":
                    self._accumulate_batch(name, x, y)
                else:
                    self._accumulate_per_sample(name, x, y)
            self._counts[name] = self._counts.get(name, 0) + 1
            self._sync()
            self._seconds[name] += time.perf_counter() - start

    def _add(self, name: str, terms: list[Tensor]) -> None:
        params = self._params()
        sums = self._sums.setdefault(name, {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params})
        for (n, _), t in zip(params, terms, strict=True):
            sums[n] += t.to(torch.float32)

    def _accumulate_batch(self, name: str, x: Tensor, y: Tensor | None) -> None:
        params = self._params()
        if len(x):
            grads = self._grads(self.sample_losses(x, y).sum(), params)
        else:
            grads = [torch.zeros_like(p) for _, p in params]
        count = torch.tensor([float(len(x))], device=self.device)
        if self._world_size() > 1:
            flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads] + [count])
            flat = self.all_reduce_sum(flat)
            count = flat[-1:]
            grads = list(torch.split(flat[:-1], [p.numel() for _, p in params]))
            grads = [g.view_as(p) for g, (_, p) in zip(grads, params, strict=True)]
        total = float(count.item())
        mean = [g / total if total > 0 else torch.zeros_like(g) for g in grads]
        self._add(name, [self._accumulate_term(g) for g in mean])

    def _accumulate_per_sample(self, name: str, x: Tensor, y: Tensor | None) -> None:
        params = self._params()
        terms = [torch.zeros_like(p, dtype=torch.float32) for _, p in params]
        for i in range(len(x)):
            yi = None if y is None else y[i : i + 1]
            grads = self._grads(self.sample_losses(x[i : i + 1], yi).sum(), params)
            for t, g in zip(terms, grads, strict=True):
                t += self._accumulate_term(g).to(torch.float32)
        self._add(name, terms)
        self._sample_counts[name] = self._sample_counts.get(name, 0) + len(x)

    def _finalise(self, name: str) -> dict[str, Tensor]:
        params = self._params()
        sums = self._sums.get(name)
        if sums is None:
            sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        if self.importance == "batch":
            denominator = float(max(self._counts.get(name, 0), 1))
            return {n: s / denominator for n, s in sums.items()}
        flat = torch.cat([sums[n].reshape(-1) for n, _ in params])
        count = torch.tensor([float(self._sample_counts.get(name, 0))], device=flat.device)
        reduced = self.all_reduce_sum(torch.cat([flat, count]))
        total = max(float(reduced[-1].item()), 1.0)
        parts = torch.split(reduced[:-1] / total, [p.numel() for _, p in params])
        return {n: part.view_as(p) for part, (n, p) in zip(parts, params, strict=True)}

    # ------------------------------------------------------------------ edit
    def apply_edit(self) -> None:
        """Finish the importances, dampen the selected parameters and log the edit's statistics."""
        self.importance_forget = self._finalise(FORGET)
        if self._cached_full is not None:
            self.importance_full = {n: t.to(self.device) for n, t in self._cached_full.items()}
        else:
            self.importance_full = self._finalise(FULL)
            self._save_full_importance()
        stats = self.dampen(self.importance_full, self.importance_forget)
        stats.update(
            {
                "importance_forget_s": self._seconds[FORGET],
                "importance_full_s": self._seconds[FULL],
            }
        )
        if self._trainer is not None:
            for key, value in stats.items():
                self.log(f"{self.method_name}/{key}", float(value), on_step=False, on_epoch=True, batch_size=1)
        self.edit_stats = stats
        if stats["dampened_fraction"] < NO_EFFECT_FRACTION:
            warn_no_effect(self, f"dampened {stats['dampened_fraction']:.4%} of the parameters")

    def dampen(
        self, importance_full: Mapping[str, Tensor], importance_forget: Mapping[str, Tensor]
    ) -> dict[str, float]:
        """Dampen every parameter of the classifier from the given importances; returns the edit's statistics."""
        total = selected_n = dampened_n = zeroed_n = 0
        beta_sum = 0.0
        full_sum = forget_sum = 0.0
        for name, param in self._params():
            i_d = importance_full[name].to(param.device, torch.float32)
            i_f = importance_forget[name].to(param.device, torch.float32)
            selected, beta = dampen_(param.data, i_d, i_f, self.alpha, self.lambda_)
            total += param.numel()
            selected_n += int(selected.sum())
            dampened_n += int((selected & (beta < 1)).sum())
            zeroed_n += int((selected & (beta == 0)).sum())
            beta_sum += float(beta[selected].sum())
            full_sum += float(i_d.sum())
            forget_sum += float(i_f.sum())
        total = max(total, 1)
        return {
            "selected_fraction": selected_n / total,
            "dampened_fraction": dampened_n / total,
            "zeroed_count": float(zeroed_n),
            "beta_mean": beta_sum / selected_n if selected_n else math.nan,
            "importance_forget_mean": forget_sum / total,
            "importance_full_mean": full_sum / total,
        }

    def _save_full_importance(self) -> None:
        path = self.full_importance_path
        if path is None or self.global_rank != 0:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({n: t.detach().cpu() for n, t in self.importance_full.items()}, tmp)
        os.replace(tmp, path)
        rank_zero_info(f"{type(self).__name__}: wrote the full-set importance to {path}")

    def _sync(self) -> None:
        if self._trainer is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class LFSSD(SSD):
    """Loss-Free SSD: SSD whose importances need no labels (gradients of the squared logit norm, absolute values).

    Identical to :class:`SSD` except that each batch's gradient is that of ``mean_i ||f(x_i)||_2^2`` and the
    accumulator adds ``|g_b|`` instead of ``g_b**2``. Regime and data as :class:`SSD`, inputs only
    (no labels are read). No published configuration exists, so ``alpha``/``lambda_`` must be tuned.

    Reference: J. Foster, K. Fogarty, S. Schoepf, C. Öztireli, A. Brintrup, "Loss-Free Machine Unlearning", ICLR
    2024 Tiny Papers, arXiv:2402.19308.

    Args:
        model: The trained classifier to unlearn.
        alpha: Selection threshold: select where ``I_f > alpha * I_D`` (> 0).
        lambda_: Dampening constant of ``beta = min(lambda_ * I_D / I_f, 1)`` (> 0).
        importance: ``"batch"`` (authors' estimator) or ``"per_sample"``.
        importance_batch_size: Global batch size of the importance passes.
        full_importance_path: File with a cached ``I_D`` (read when it exists, written otherwise).
    """

    needs_labels = False

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 10.0,
        lambda_: float = 1.0,
        importance: Literal["batch", "per_sample"] = "batch",
        importance_batch_size: int = 64,
        full_importance_path: str | None = None,
    ) -> None:
        super().__init__(
            model,
            alpha=alpha,
            lambda_=lambda_,
            importance=importance,
            importance_batch_size=importance_batch_size,
            full_importance_path=full_importance_path,
            label_free=True,
        )
