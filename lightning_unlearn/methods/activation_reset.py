"""Activation reset: re-initialise filters that fire more on the forget set, then finetune.

Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
Unlearning Approaches", Deep Learning course project, ETH Zürich, 2023.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_unlearn.hints import warn_no_effect
from lightning_unlearn.methods.base import (
    OptimizerCallable,
    Stage,
    check_choice,
    check_integer,
)
from lightning_unlearn.methods.precision_common import (
    ACTRESET_SEED_OFFSET,
    PrecisionStage,
    Preset,
    _check_common,
    _check_epochs,
    _PrecisionMultiStage,
    _resolve,
    _stage_optimizers,
    activation_layers,
    flag_channels,
    kaiming_draw,
)
from lightning_unlearn.models.cut import final_linear


class ActivationReset(_PrecisionMultiStage):
    """Re-initialise conv filters that respond more to the forget set than to a retain sample, reset the head.

    Regime: statistics → edit → finetune (multi-stage, manual optimisation). Stages: ``statistics`` (one
    forward-only epoch, ``trains=False``, unshuffled, inputs only: the forget set and a seeded retain sample S of
    ``retain_sample_size`` or ``floor(retain_fraction * |R|)`` samples; forward hooks on the hooked conv layers
    sum the raw conv outputs; sums and counts reduced across ranks) → edit at its end: per layer, channel ``c`` is
    flagged when ``A_f[c] > A_r[c]`` at more than ``toll * H * W`` positions, its whole filter is replaced by a
    fresh Kaiming-normal draw (BN kept); with ``reset_head`` the whole final linear weight is redrawn (bias kept)
    → ``finetune`` (labelled retain set, ``retain_epochs``, lr ``retain_lr``, new SGD momentum 0.9, Nesterov,
    weight decay 5e-4). The epoch budget ``1 + retain_epochs`` follows from the stages (``trainer.max_epochs`` is
    set from it and the loaders are rebuilt every epoch).

    The authors' code (``preset="reference"``) differs from the corrected default in four switches: the retain
    sums are divided by |R| instead of |S| (``retain_mean_divisor``); the statistics pass runs with BN in train
    mode, so it updates the running statistics (``stats_bn_mode``; in train mode the whole forget set is passed
    before the whole retain sample, the authors' order); the retain loader is not shuffled (``shuffle_retain``);
    only convs whose qualified name contains ``conv`` are hooked, which skips ResNet shortcut convs (``layers``).
    The reference preset also evaluates the threshold as the authors do, ``(toll * H) * W`` compared in float32
    (:func:`flag_channels_authors`); the default uses ``toll * (H * W)``.

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
        layers: ``"all_conv"`` (every conv of the extractor) or ``"name_conv"`` (names containing ``conv``);
            ``None`` follows the preset.
        retain_mean_divisor: ``"sample"`` (|S|) or ``"retain_set"`` (|R|); ``None`` follows the preset.
        stats_bn_mode: ``"eval"`` or ``"train"`` (BN mode of the statistics pass); ``None`` follows the preset.
        shuffle_retain: Shuffle the retain set in the finetune stage; ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        nesterov: Nesterov momentum.
        finetune_optimizer: Optimiser factory of the finetune stage (its own lr wins).
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
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
        head_name: str | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, retain_lr=retain_lr)
        _check_epochs("retain_epochs", retain_epochs)
        if not 0.0 < toll < 1.0:
            raise ValueError(f"toll must be in (0, 1), got {toll!r}")
        if not 0.0 < retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction!r}")
        check_integer("retain_sample_size", retain_sample_size, 1, optional=True)
        check_integer("seed", seed, optional=True)
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
        self.layer_names = activation_layers(self.model, self.layers, self.head_name)
        if not self.layer_names and not reset_head:
            raise ValueError(
                "ActivationReset: the classifier has no hooked conv layer for layers="
                f"{self.layers!r} (allowed: 'all_conv', 'name_conv') and reset_head=False: nothing to edit"
            )
        self._sums: dict[str, dict[str, Tensor]] = {}
        self._counts = torch.zeros(2, dtype=torch.float64)
        self._deferred: list[Tensor] = []

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
        """Sum the raw outputs of the hooked convs over the forget and retain-sample inputs of one batch.

        With BN in train mode (``stats_bn_mode="train"``) every forward pass moves the BN running statistics, so
        the pass order matters: as in the authors' code, all forget batches run first and all retain-sample
        batches after them. The retain-sample inputs are therefore held (on their device) and run at the end of
        the stage, in loader order. In eval mode nothing depends on the order and each batch is summed at once.
        """
        if batch_idx == 0:
            self._sums = {"forget": {}, "retain_sample": {}}
            self._counts = torch.zeros(2, dtype=torch.float64)
            self._deferred = []
        was_training = self.model.training
        if self.stats_bn_mode == "eval":
            self.model.eval()
        try:
            for slot, split in enumerate(("forget", "retain_sample")):
                part = batch.get(split) if isinstance(batch, Mapping) else None
                if part is None:
                    continue
                x, _, _ = self.split_batch(part)
                if split == "retain_sample" and self.stats_bn_mode == "train":
                    self._deferred.append(x.detach())
                    continue
                self.accumulate(split, x)
                self._counts[slot] += len(x)
        finally:
            self.model.train(was_training)

    def _run_deferred_retain(self) -> None:
        """Run the held retain-sample batches (train-mode statistics) after every forget batch, in loader order."""
        deferred, self._deferred = self._deferred, []
        for x in deferred:
            self.accumulate("retain_sample", x)
            self._counts[1] += len(x)

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
        self._run_deferred_retain()
        counts = self._reduce(self._counts.to(self.device))
        sums = {
            split: {name: self._reduce(self._layer_sum(split, name)) for name in self.layer_names}
            for split in ("forget", "retain_sample")
        }
        n_f, n_s = float(counts[0]), float(counts[1])
        divisor = n_s
        if self.retain_mean_divisor == "retain_set":
            divisor = float(self._retain_size if self._retain_size is not None else n_s)
        flag = flag_channels_authors if self.hparams["preset"] == "reference" else flag_channels
        flags = {
            name: flag(
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
        if reset == 0:
            if self.hparams["reset_head"]:
                warn_no_effect(self, f"flagged 0 of {total} channels", "only the head is redrawn")
            else:
                warn_no_effect(self, f"flagged 0 of {total} channels")
        head_reset = bool(self.hparams["reset_head"])
        if head_reset:
            weight = final_linear(self.model, self.head_name).weight
            weight.data.copy_(kaiming_draw(weight, generator).to(device=weight.device, dtype=weight.dtype))
        self._log_value("actreset/head_reset", float(head_reset))


def flag_channels_authors(a_forget: Tensor, a_retain: Tensor, toll: float) -> Tensor:
    """The activation rule exactly as the authors evaluate it (the ``reference`` preset).

    A channel is flagged when ``count > toll * H * W`` with ``count = #{(h, w) : A_f[c, h, w] > A_r[c, h, w]}``,
    the threshold multiplied left to right, ``(toll * H) * W``, in float64, and the comparison done in float32:
    the authors compare an integer count tensor with a Python float, which PyTorch evaluates in the default
    float32. (``toll * (H * W)`` can differ in the last float64 bit, e.g. ``0.48 * 225 = 108`` but
    ``0.48 * 15 * 15 = 107.99999999999999``; after the float32 rounding both are 108, so a count of 108 is not
    flagged either way.) The float32 comparison is explicit here, so the result does not depend on
    ``torch.get_default_dtype()``.

    Args:
        a_forget: Mean raw conv output over the forget set, ``C x H x W``.
        a_retain: Mean raw conv output over the retain sample, ``C x H x W``.
        toll: Fraction in ``(0, 1)``.

    Returns:
        Boolean ``C`` vector of flagged channels.
    """
    count = (a_forget > a_retain).sum((1, 2))
    threshold = toll * a_forget.shape[1] * a_forget.shape[2]
    return count.to(torch.float32) > torch.tensor(threshold, dtype=torch.float32, device=count.device)
