"""Membership-inference attacks as distributed-correct torchmetrics metrics.

Every attack is a :class:`MembershipAttack`: a :class:`~torchmetrics.Metric` whose states are per-sample
``feature`` / ``label`` / ``index`` / ``split`` tensors reduced with ``"cat"``. ``compute()`` gathers them from all
processes, puts them in a canonical order (sorted by split, then by index within the split, duplicate pairs
dropped), fits and scores the attack on rank 0 only and broadcasts the scalar, so 1 and N processes report the
same number. Without a process group it computes directly.

Adding an attack is a local change: subclass :class:`MembershipAttack`, set ``name`` (logged as ``mia/<name>``),
``splits`` (the evaluation splits it consumes) and ``higher_is_better``, override :meth:`~MembershipAttack.features`
(per-sample features from logits and labels, float64) and :meth:`~MembershipAttack.attack` (fit and score on the
canonical NumPy arrays; draw any random subset with ``self.seed``), and register it under a short key with
:func:`register_attack` so callbacks can select it by name::

    @register_attack("svc")
    class SVCMIA(MembershipAttack):
        name = "svc_confidence_efficacy"
        splits = ("forget", "retain", "test", "test_retain")
        optional_splits = ("test_retain",)
        higher_is_better = True

        def features(self, logits, target):
            return true_class_confidence(softmax64(logits), target)

        def attack(self, data):
            ...  # fit SVC on data["retain"] / data["test"], score data["forget"]
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional import entropy, softmax64

__all__ = [
    "ATTACKS",
    "AttackData",
    "EntropyMIA",
    "MembershipAttack",
    "SplitArrays",
    "available_attacks",
    "build_attack",
    "register_attack",
]

_STATES: tuple[tuple[str, torch.dtype], ...] = (
    ("feature", torch.float64),
    ("label", torch.int64),
    ("index", torch.int64),
    ("split", torch.int64),
)


@dataclass(frozen=True)
class SplitArrays:
    """Canonically ordered per-sample arrays of one split.

    Attributes:
        feature: Features, float64 array of shape ``[n, k]``.
        label: Stored labels, int64 array of shape ``[n]``.
        index: Positions of the samples in the split's sorted index list (ascending), int64 array ``[n]``.
    """

    feature: np.ndarray
    label: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class AttackData:
    """The gathered, canonical evaluation data an attack is fitted and scored on.

    Attributes:
        splits: Arrays per split name; every split the attack consumes is present (possibly empty).
        feature_dim: Number of feature columns ``k``.
    """

    splits: Mapping[str, SplitArrays] = field(default_factory=dict)
    feature_dim: int = 1

    def __getitem__(self, name: str) -> SplitArrays:
        """Arrays of split ``name`` (empty arrays when the split received no samples)."""
        if name in self.splits:
            return self.splits[name]
        return SplitArrays(
            feature=np.empty((0, self.feature_dim), dtype=np.float64),
            label=np.empty(0, dtype=np.int64),
            index=np.empty(0, dtype=np.int64),
        )

    def require(self, *names: str) -> None:
        """Raise if any of the named splits has no samples.

        Raises:
            ValueError: Naming the empty splits.
        """
        missing = [name for name in names if len(self[name]) == 0]
        if missing:
            raise ValueError(
                f"the attack needs samples of the evaluation splits {list(names)}, but {missing} received none; "
                "check that the datamodule's eval_split_names include them"
            )


class MembershipAttack(Metric):
    """Base class of membership-inference attacks computed on whole evaluation splits.

    States (all ``dist_reduce_fx="cat"``): ``feature`` (float64, flattened per batch so that ranks without samples
    can still join the gather), ``label``, ``index`` (position within the split) and ``split`` (int64 code: the
    position of the split name in :attr:`splits`).

    Use :meth:`update` per evaluation batch and :meth:`compute` once per evaluation, on every process (the gather
    and the broadcast are collective). ``forward`` only accumulates: a per-batch attack value is meaningless.

    Class attributes set by subclasses: ``name`` (logged as ``mia/<name>``), ``splits`` (consumed split names, in
    code order), ``optional_splits`` (those of ``splits`` an evaluation may lack, e.g. ``test_retain`` outside
    class-wise scenarios) and ``higher_is_better`` (``None`` = closer to the retrained model is better).

    Args:
        seed: Seed of every random step (subsets, attacker models' ``random_state``).
        retain_subsample: If set, the retain split is reduced to a seeded random subset of this many samples
            (drawn from the canonical order, so independent of the number of processes) before the attack sees
            it. ``None`` keeps all of it (faithful to the protocols).
        **kwargs: Passed to :class:`~torchmetrics.Metric`.

    Raises:
        ValueError: If ``retain_subsample`` is not ``None`` and smaller than 1.
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("forget", "retain", "test")
    optional_splits: ClassVar[tuple[str, ...]] = ()

    full_state_update = False
    is_differentiable = False
    higher_is_better: bool | None = None

    feature: list[Tensor]
    label: list[Tensor]
    index: list[Tensor]
    split: list[Tensor]

    def __init__(self, seed: int = 0, retain_subsample: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.name:
            raise TypeError(f"{type(self).__name__} must set the class attribute `name` (logged as mia/<name>)")
        if retain_subsample is not None and retain_subsample < 1:
            raise ValueError(f"retain_subsample must be None or an integer >= 1, got {retain_subsample!r}")
        self.seed = int(seed)
        self.retain_subsample = retain_subsample
        for state, _ in _STATES:
            self.add_state(state, default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ to override
    @abstractmethod
    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample attack features of one batch.

        Args:
            logits: Logits of shape ``[n, C]`` (any float dtype; promote to float64 before use).
            target: Stored labels of shape ``[n]``.

        Returns:
            Float64 features of shape ``[n]`` or ``[n, k]``.
        """

    @abstractmethod
    def attack(self, data: AttackData) -> float:
        """Fit the attack and return the reported value; runs on one process only.

        Args:
            data: Canonically ordered arrays of every split in :attr:`splits`.

        Returns:
            The reported scalar (a fraction in [0, 1], ``nan`` if undefined).
        """

    # ------------------------------------------------------------------ metric API
    @classmethod
    def required_splits(cls) -> tuple[str, ...]:
        """The consumed splits an evaluation must provide (:attr:`splits` minus :attr:`optional_splits`)."""
        return tuple(split for split in cls.splits if split not in cls.optional_splits)

    def split_code(self, split: str | int) -> int:
        """Integer code of a split consumed by this attack.

        Args:
            split: A name in :attr:`splits` or its code (its position there).

        Returns:
            The code.

        Raises:
            ValueError: If the split is not consumed by this attack.
        """
        if isinstance(split, str):
            if split not in self.splits:
                raise ValueError(f"{type(self).__name__} consumes the splits {list(self.splits)}, got {split!r}")
            return self.splits.index(split)
        if not 0 <= int(split) < len(self.splits):
            raise ValueError(
                f"{type(self).__name__} split codes are 0..{len(self.splits) - 1} ({list(self.splits)}), got {split!r}"
            )
        return int(split)

    def update(self, split: str | int, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Accumulate the features of one evaluation batch.

        Args:
            split: Split name (in :attr:`splits`) or its integer code.
            logits: Logits ``[n, C]`` from the model in eval mode.
            target: Stored labels ``[n]``.
            index: Positions of the samples within their split ``[n]``.

        Raises:
            ValueError: On an unknown split or inconsistent shapes.
        """
        code = self.split_code(split)
        n = logits.shape[0] if logits.ndim > 0 else -1
        if logits.ndim != 2 or target.shape != (n,) or index.shape != (n,):
            raise ValueError(
                f"{type(self).__name__}.update expects logits [n, C], target [n] and index [n], got "
                f"{tuple(logits.shape)}, {tuple(target.shape)} and {tuple(index.shape)}"
            )
        with torch.no_grad():
            feature = self.features(logits.detach(), target.detach())
        if feature.ndim not in (1, 2) or feature.shape[0] != n:
            raise ValueError(
                f"{type(self).__name__}.features must return [n] or [n, k] with n={n}, got {tuple(feature.shape)}"
            )
        device = self.device
        self.feature.append(feature.to(device=device, dtype=torch.float64).reshape(-1))
        self.label.append(target.detach().to(device=device, dtype=torch.int64))
        self.index.append(index.detach().to(device=device, dtype=torch.int64))
        self.split.append(torch.full((n,), code, dtype=torch.int64, device=device))

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate like :meth:`update`; no per-batch value is computed (an attack needs whole splits)."""
        self.update(*args, **kwargs)

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """Synchronise the states; a process without samples contributes correctly typed empty tensors."""
        for state, dtype in _STATES:
            value = getattr(self, state)
            if isinstance(value, list) and not value:
                value.append(torch.empty(0, dtype=dtype, device=self.device))
        super().sync(
            dist_sync_fn=dist_sync_fn,
            process_group=process_group,
            should_sync=should_sync,
            distributed_available=distributed_available,
        )

    def compute(self) -> Tensor:
        """Fit and score the attack on the gathered data; identical on every process.

        Returns:
            The reported value as a float64 scalar tensor.

        Raises:
            RuntimeError: On processes other than 0 when the attack failed on process 0 (which re-raises the
                original error).
        """
        distributed = self.sync_on_compute and dist.is_available() and dist.is_initialized()
        if not distributed:
            return torch.tensor(self.attack(self.canonical_data()), dtype=torch.float64, device=self.device)
        group = self.process_group
        payload = torch.zeros(2, dtype=torch.float64, device=self.device)
        error: Exception | None = None
        if dist.get_rank(group) == 0:
            try:
                payload[0] = float(self.attack(self.canonical_data()))
            except Exception as exc:  # re-raised below, after the other ranks were released
                error = exc
                payload[1] = 1.0
        src = 0 if group is None else dist.get_global_rank(group, 0)
        dist.broadcast(payload, src=src, group=group)
        if error is not None:
            raise error
        if payload[1].item() != 0.0:
            raise RuntimeError(f"{type(self).__name__}: the attack failed on process 0; see its error")
        return payload[0]

    # ------------------------------------------------------------------ helpers
    def canonical_data(self) -> AttackData:
        """Current (gathered, if called inside ``compute``) states as canonically ordered NumPy arrays.

        Samples are sorted by (split code, index), duplicate (split, index) pairs are dropped (first kept), and
        ``retain_subsample`` is applied. Every split in :attr:`splits` gets an entry.

        Returns:
            The attack data.

        Raises:
            RuntimeError: If the stored features are inconsistent with the number of samples.
        """
        arrays = {state: _as_tensor(getattr(self, state), dtype).cpu().numpy() for state, dtype in _STATES}
        split, index, label = arrays["split"], arrays["index"], arrays["label"]
        n = split.shape[0]
        feature_dim = arrays["feature"].size // n if n else 1
        if arrays["feature"].size != n * feature_dim or label.shape[0] != n or index.shape[0] != n:
            raise RuntimeError(f"{type(self).__name__}: inconsistent state sizes; every feature row needs a sample")
        feature = arrays["feature"].reshape(n, feature_dim)
        order = np.lexsort((index, split))
        split, index, label, feature = split[order], index[order], label[order], feature[order]
        keep = np.ones(n, dtype=bool)
        keep[1:] = (split[1:] != split[:-1]) | (index[1:] != index[:-1])
        split, index, label, feature = split[keep], index[keep], label[keep], feature[keep]

        per_split: dict[str, SplitArrays] = {}
        for code, name in enumerate(self.splits):
            mask = split == code
            per_split[name] = SplitArrays(feature=feature[mask], label=label[mask], index=index[mask])
        retain = per_split.get("retain")
        if retain is not None and self.retain_subsample is not None and len(retain) > self.retain_subsample:
            rng = np.random.default_rng(self.seed)
            chosen = np.sort(rng.choice(len(retain), size=self.retain_subsample, replace=False))
            per_split["retain"] = SplitArrays(
                feature=retain.feature[chosen], label=retain.label[chosen], index=retain.index[chosen]
            )
        return AttackData(splits=per_split, feature_dim=feature_dim)


def _as_tensor(value: Tensor | list[Tensor], dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if not value:
        return torch.empty(0, dtype=dtype)
    return torch.cat(value)


# ---------------------------------------------------------------------- registry
ATTACKS: dict[str, type[MembershipAttack]] = {}
"""Attacks selectable by short name (e.g. in :class:`~lightning_unlearn.callbacks.MembershipInference`)."""

_A = TypeVar("_A", bound=type[MembershipAttack])


def register_attack(key: str) -> Callable[[_A], _A]:
    """Class decorator registering an attack in :data:`ATTACKS` under ``key``.

    Args:
        key: Short name used to select the attack.

    Returns:
        The decorator.

    Raises:
        ValueError: If ``key`` is already registered to another class.
    """

    def decorator(cls: _A) -> _A:
        if key in ATTACKS and ATTACKS[key] is not cls:
            raise ValueError(f"attack name {key!r} is already registered to {ATTACKS[key].__name__}")
        ATTACKS[key] = cls
        return cls

    return decorator


def available_attacks() -> list[str]:
    """Sorted names of the registered attacks."""
    return sorted(ATTACKS)


def build_attack(key: str, **kwargs: Any) -> MembershipAttack:
    """Instantiate a registered attack by name.

    Args:
        key: Registered name (see :func:`available_attacks`).
        **kwargs: Constructor arguments (``seed``, ``retain_subsample``, ...).

    Returns:
        The attack metric.

    Raises:
        ValueError: If ``key`` is not registered, listing the allowed names.
    """
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {key!r}; allowed: {available_attacks()}")
    return ATTACKS[key](**kwargs)


# ---------------------------------------------------------------------- attacks
@register_attack("entropy")
class EntropyMIA(MembershipAttack):
    """Entropy logistic-regression attack of JiT/SSD (bad-teaching), logged as ``mia/entropy_forget_member_rate``.

    Feature: the prediction entropy ``H = -sum_c p_c ln p_c`` of ``p = softmax(logits)``
    (float64, model in eval mode), one number per sample. Members (label 1): **all** of the retain split D_r.
    Non-members (label 0): **the whole test split** (in class-wise scenarios it still contains the forgotten
    class). Attacker: ``LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs")`` fitted once on all of
    it (the code's two-class multinomial model with doubled ``C``); no subsampling unless ``retain_subsample`` is
    set. Reported: the fraction of the forget split D_f predicted member (``nan`` if D_f is empty).

    Direction: **lower = more forgotten** (``higher_is_better=False``); the ideal is the retrained model's value
    (near 0 for class forgetting, well above 0 for random forgetting).

    Args:
        seed: Seed of the ``retain_subsample`` draw (the lbfgs fit itself is deterministic).
        retain_subsample: Optional size of a seeded random subset of D_r used as members.
        **kwargs: Passed to :class:`~torchmetrics.Metric`.
    """

    name: ClassVar[str] = "entropy_forget_member_rate"
    splits: ClassVar[tuple[str, ...]] = ("forget", "retain", "test")
    higher_is_better = False

    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Entropy of the softmax output, float64 ``[n]``."""
        return entropy(softmax64(logits))

    def attack(self, data: AttackData) -> float:
        """Fit the logistic regression on retain (1) vs test (0) entropies; share of forget predicted member."""
        from sklearn.linear_model import LogisticRegression

        data.require("retain", "test")
        forget, retain, test = data["forget"], data["retain"], data["test"]
        if len(forget) == 0:
            return float("nan")
        x = np.concatenate([retain.feature, test.feature])
        y = np.concatenate([np.ones(len(retain), dtype=np.int64), np.zeros(len(test), dtype=np.int64)])
        model = LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs").fit(x, y)
        return float(np.mean(model.predict(forget.feature) == 1))
