"""What to turn when a method did (almost) nothing, or damaged what it should keep: one table for every method.

Published hyperparameters rarely transfer between models (a threshold tuned on one network selects nothing on
another; a learning rate that forgets on one destroys another). Two things are checked after a run, each naming the
knob to turn:

- **no effect**: the edit selected or changed (almost) nothing — SSD / LFSSD dampened no parameter, a pruning
  method reset no weight, ActivationReset flagged no channel (see each method's ``apply_edit``);
- **damage**: the accuracy on the retain set fell by more than a tolerance (``UnlearningReport(max_retain_drop=)``).

:func:`warn_no_effect` is what the methods call; :func:`tuning_hint` gives the text
:class:`~lightning_unlearn.callbacks.UnlearningReport` uses. The table is keyed by class name, so neither layer
imports the other. ``lightning-unlearn-tune`` searches these knobs automatically (see the tuning page of the docs).
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["DAMAGE_HINTS", "NO_EFFECT_HINTS", "HintKind", "tuning_hint", "warn_no_effect"]

#: The two kinds of hints.
HintKind = Literal["no_effect", "damage"]

_GRADIENT_DAMAGE = "lower `lr` or `trainer.max_epochs`"
_GRADIENT_NO_EFFECT = "raise `lr` or `trainer.max_epochs`"

#: Per method class name: what to turn when the run forgot nothing.
NO_EFFECT_HINTS: dict[str, str] = {
    "SSD": "lower `alpha` (selects more parameters) or `lambda_` (dampens them more)",
    "LFSSD": "lower `alpha` (selects more parameters) or `lambda_` (dampens them more)",
    "Pruning": "raise `quantile` (the share of weights reset per tensor)",
    "PruningLast": "raise `quantile`; this method only edits the head",
    "PruningComplex": "raise `quantile` (the share of weights reset per tensor)",
    "ActivationReset": "lower `toll` (the share of positions where the forget activation must exceed the retain one)",
    "JiT": "raise `lr` or `sigma`",
    "LAF": "raise `unlearn_epochs` or `lr_ue`",
    "L1Sparse": "raise `alpha` (the l1 weight), `lr` or `epochs`",
    "SCRUB": "raise `lr` or `max_epochs_forget` (the epochs with max-steps on the forget set)",
    "SalUn": "raise `lr`, `epochs` or `mask_ratio` (the share of weights that move)",
    "GradientAscent": "raise `lr` or `forget_weight`",
    "BadTeaching": "raise `lr` or `epochs`",
    "UNSIR": "raise `impair_lr` or `noise_steps`",
    "Poison": "raise `lr` or `epochs`",
    "PoisonFull": "raise `lr` or `epochs`",
    "Hybrid": "raise `forget_lr` or `forget_epochs`",
    "BoundaryShrink": "raise `lr`, `epochs` or `bound`",
    "BoundaryExpanding": "raise `lr` or `epochs`",
}

#: Per method class name: what to turn when the run damaged the retain set.
DAMAGE_HINTS: dict[str, str] = {
    "SSD": "raise `alpha` (selects fewer parameters) or `lambda_` (dampens them less)",
    "LFSSD": "raise `alpha` (selects fewer parameters) or `lambda_` (dampens them less)",
    "Pruning": "lower `quantile`, or raise `retain_epochs` of the repair stage",
    "PruningLast": "lower `quantile`, or raise `retain_epochs` of the repair stage",
    "PruningComplex": "lower `quantile`, or raise `retain_epochs` of the repair stage",
    "ActivationReset": "raise `toll`, or `retain_epochs` of the repair stage",
    "JiT": "lower `lr` or `sigma`",
    "LAF": "lower `lr_ue` or `unlearn_epochs`, or raise `lr_ra`",
    "L2UL": "lower the optimizer's learning rate or `max_epochs`, or raise `reg_lambda`",
    "SCRUB": "lower `lr` or `max_epochs_forget`, or raise `alpha` / `gamma` (the retain terms)",
    "SalUn": "lower `lr`, `epochs` or `mask_ratio`",
    "BadTeaching": "lower `lr` or `epochs`",
    "UNSIR": "lower `impair_lr`, or raise `repair_epochs`",
    "BoundaryShrink": "lower `lr`, `epochs` or `bound`",
    "BoundaryExpanding": "lower `lr` or `epochs`",
    "Poison": "lower `lr` or `epochs`",
    "PoisonFull": "lower `lr` or `epochs`",
    "Hybrid": "lower `forget_lr`, or raise `retain_epochs`",
}

_FALLBACK = {"no_effect": _GRADIENT_NO_EFFECT, "damage": _GRADIENT_DAMAGE}


def tuning_hint(method: object, kind: HintKind) -> str:
    """The knob to turn for ``method`` (an instance or class) after a run with no effect or with damage.

    The table is looked up along the class hierarchy (a subclass of ``SSD`` gets SSD's hint); methods not in it get
    the gradient methods' hint (learning rate and epochs). Every hint ends by pointing at ``lightning-unlearn-tune``.

    Raises:
        ValueError: If ``kind`` is not ``"no_effect"`` or ``"damage"``.
    """
    if kind not in _FALLBACK:
        raise ValueError(f"kind must be one of {tuple(_FALLBACK)}, got {kind!r}")
    table = NO_EFFECT_HINTS if kind == "no_effect" else DAMAGE_HINTS
    cls = method if isinstance(method, type) else type(method)
    text = next((table[c.__name__] for c in cls.__mro__ if c.__name__ in table), _FALLBACK[kind])
    return f"{text} (lightning-unlearn-tune searches them for your model)"


def warn_no_effect(method: object, what: str, consequence: str = "the classifier is (almost) unchanged") -> str:
    """Warn (rank 0) that ``method``'s edit changed (almost) nothing, naming the knob to turn.

    Args:
        method: The method instance.
        what: What was (nearly) empty, e.g. ``"dampened 0.0008% of the parameters"``.
        consequence: What it means for the classifier.

    Returns:
        The warning's text.
    """
    name = type(method).__name__
    text = f"{name} {what}: {consequence}; {tuning_hint(method, 'no_effect')}"
    rank_zero_warn(text)
    return text
