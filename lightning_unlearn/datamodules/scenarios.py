"""Unlearning scenarios: deterministic forget/retain/test splits.

A scenario is a small, immutable description of *what* to forget (``ClassRemoval([0])``, ``KInstances(16)``,
...). ``Scenario.split`` turns it into a :class:`SplitResult` from the training targets and a seed, never touching
the global RNG, so the split is identical on every rank and independent of model initialisation.

Scenarios are plain classes with typed ``__init__`` so that LightningCLI/jsonargparse can build them from YAML::

    data:
      scenario:
        class_path: lightning_unlearn.datamodules.ClassRemoval
        init_args: {classes: [0]}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_fraction, check_integer, is_integer

Relabel = Literal["uniform_other", "laf_legacy"]
Preset = Literal["corrected", "reference"]

RELABEL_MODES: tuple[str, ...] = ("uniform_other", "laf_legacy")
PRESETS: tuple[str, ...] = ("corrected", "reference")
_MAX_OFFENDERS = 10

__all__ = [
    "ClassFraction",
    "ClassRemoval",
    "Continual",
    "DatasetInfo",
    "Indices",
    "KInstances",
    "NoisyLabels",
    "RandomRemoval",
    "RequestSplit",
    "Scenario",
    "SplitResult",
    "SubclassRemoval",
    "floor_fraction",
    "indices_sha256",
    "take",
]


# --------------------------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------------------------
def take(n: int, pool: Tensor | Sequence[int], seed: int | torch.Generator) -> Tensor:
    """Draw ``n`` elements of ``pool`` without replacement, reproducibly.

    ``pool`` is sorted ascending, then ``perm = torch.randperm(len(pool), generator=g)`` is drawn from a fresh
    generator seeded with ``seed`` (or from the given generator, which advances) and ``pool[perm[:n]]`` is
    returned **in draw order**. With ``pool = range(N)`` this reproduces ``torch.manual_seed(seed);
    torch.randperm(N)[:n]``. For one seed, smaller draws are prefixes (hence subsets) of larger ones.

    Args:
        n: Number of elements to draw (``0 <= n <= len(pool)``).
        pool: Candidate indices.
        seed: Integer seed (``>= 0``) of a fresh CPU generator, or a generator to draw from.

    Returns:
        A LongTensor of ``n`` distinct elements of ``pool``.
    """
    values = torch.as_tensor(pool, dtype=torch.long).flatten().sort().values
    if not 0 <= n <= values.numel():
        raise ValueError(f"take: n must be in [0, {values.numel()}] (the pool size), got {n}")
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        check_integer("seed", seed)
        generator = seeded_generator(seed)
    perm = torch.randperm(values.numel(), generator=generator)
    return values[perm[:n]]


def indices_sha256(indices: Tensor | Sequence[int]) -> str:
    """SHA-256 of the comma-joined decimal list (no spaces, no newline), as stored in ``splits.json``."""
    values = torch.as_tensor(indices, dtype=torch.long).flatten().tolist()
    return hashlib.sha256(",".join(str(int(v)) for v in values).encode()).hexdigest()


def floor_fraction(fraction: float, n: int) -> int:
    """``floor(fraction * n)``, robust to binary rounding (``0.29 * 100`` gives 29, not 28)."""
    return math.floor(round(fraction * n, 9))


def _offenders(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in list(values)[:_MAX_OFFENDERS])
    more = len(values) - _MAX_OFFENDERS
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _sorted_unique(indices: Tensor) -> Tensor:
    return torch.unique(indices.to(torch.long).flatten(), sorted=True)


def _complement(n: int, removed: Sequence[Tensor]) -> Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    for part in removed:
        keep[part] = False
    return keep.nonzero().flatten()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Scenario):
        return value.record()
    if isinstance(value, Mapping):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------
# Dataset description and results
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a scenario may know about a dataset before its data is loaded.

    Args:
        num_classes: Number of classes ``C`` of the training targets.
        name: Dataset name (``mnist``, ``cifar20``, ...), checked against saved split files.
        class_names: Class names, index = class id.
        class_aliases: Extra accepted names (e.g. the JiT/SSD short CIFAR-20 names).
        fine_class_names: Fine class names for sub-class removal (``cifar20`` only).
    """

    num_classes: int
    name: str | None = None
    class_names: tuple[str, ...] | None = None
    class_aliases: Mapping[str, int] = field(default_factory=dict)
    fine_class_names: tuple[str, ...] | None = None

    def resolve(self, refs: Sequence[int | str], what: str, *, fine: bool = False) -> tuple[int, ...]:
        """Map class ids or names to ids; ``ValueError`` for unknown or duplicate classes."""
        names = self.fine_class_names if fine else self.class_names
        num = len(names) if fine and names is not None else self.num_classes
        aliases: Mapping[str, int] = {} if fine else self.class_aliases
        out: list[int] = []
        for ref in refs:
            if is_integer(ref):
                if not 0 <= int(ref) < num:
                    raise ValueError(f"{what}: unknown class id {ref}; {self._allowed(names, aliases, num)}")
                out.append(int(ref))
            elif isinstance(ref, str):
                out.append(self._lookup_name(ref, names, aliases, num, what))
            else:
                raise ValueError(f"{what}: classes must be integer ids or names, got {ref!r}")
        dups = sorted({c for c in out if out.count(c) > 1})
        if dups:
            raise ValueError(f"{what}: duplicate classes {dups} (given {list(refs)!r})")
        return tuple(out)

    def _lookup_name(
        self, ref: str, names: tuple[str, ...] | None, aliases: Mapping[str, int], num: int, what: str
    ) -> int:
        table: dict[str, int] = {}
        if names is not None:
            table.update({n: i for i, n in enumerate(names)})
        table.update(aliases)
        if ref in table:
            return table[ref]
        folded = {k.lower(): v for k, v in table.items()}
        if ref.lower() in folded:
            return folded[ref.lower()]
        if ref.strip().isdigit() and int(ref) < num:  # ids given as strings (JSON/CLI mapping keys)
            return int(ref)
        raise ValueError(f"{what}: unknown class name {ref!r}; {self._allowed(names, aliases, num)}")

    def _allowed(self, names: tuple[str, ...] | None, aliases: Mapping[str, int], num: int) -> str:
        text = f"allowed ids 0..{num - 1}"
        if names is not None:
            text += f" or names {list(names)}"
        if aliases:
            text += f" or aliases {sorted(aliases)}"
        dataset = f" of dataset {self.name!r}" if self.name else ""
        return text + dataset


@dataclass(frozen=True)
class SplitContext:
    """Data a scenario draws from: the dataset description plus training/test targets."""

    info: DatasetInfo
    targets: Tensor
    test_targets: Tensor | None = None
    fine_targets: Tensor | None = None
    fine_test_targets: Tensor | None = None
    preset: Preset = "corrected"

    @property
    def num_train(self) -> int:
        """Number of training samples ``N``."""
        return int(self.targets.numel())


@dataclass(frozen=True)
class RequestSplit:
    """The forget set of one request (a single scenario is one request).

    Attributes:
        forget_indices: Sorted unique training indices ``F``.
        test_forget_indices: Sorted test indices of the forgotten classes (class/sub-class), else ``None``.
        noisy_labels: Noisy label of each forget sample (aligned with ``forget_indices``), noisy scenario only.
        clean_labels: Original label of each forget sample, noisy scenario only.
        scenario_type: Type name of the scenario that drew it.
    """

    forget_indices: Tensor
    test_forget_indices: Tensor | None = None
    noisy_labels: Tensor | None = None
    clean_labels: Tensor | None = None
    scenario_type: str = ""


@dataclass(frozen=True)
class SplitResult:
    """A computed split: one or more requests and the active one.

    Attributes:
        num_train: ``N``, size of the training set ``D``.
        num_test: Size of the test set, when known.
        requests: Forget set of each request (one for a single scenario).
        request: Index of the active request.
        continual: Whether the split comes from a continual scenario.
        scenario: Record of the scenario as given (``{"type": ..., params...}``).
        labelled_indices: Labelled retain subset restored from a split file, else ``None``.
        retain_sample_indices: Retain sample restored from a split file, else ``None``.
    """

    num_train: int
    num_test: int | None
    requests: tuple[RequestSplit, ...]
    request: int = 0
    continual: bool = False
    scenario: dict[str, Any] = field(default_factory=dict)
    labelled_indices: Tensor | None = None
    retain_sample_indices: Tensor | None = None

    @property
    def active(self) -> RequestSplit:
        """The active request."""
        return self.requests[self.request]

    @property
    def forget_indices(self) -> Tensor:
        """Sorted forget indices of the active request."""
        return self.active.forget_indices

    @property
    def forget_sha256(self) -> str:
        """SHA-256 of the active forget list."""
        return indices_sha256(self.forget_indices)

    @property
    def retain_indices(self) -> Tensor:
        """``D`` minus every forget set up to and including the active request (sorted)."""
        return _complement(self.num_train, [r.forget_indices for r in self.requests[: self.request + 1]])

    @property
    def previous_indices(self) -> Tensor | None:
        """Union of the earlier requests' forget sets (continual, request > 0), else ``None``."""
        if not self.continual or self.request == 0:
            return None
        return _sorted_unique(torch.cat([r.forget_indices for r in self.requests[: self.request]]))

    @property
    def test_forget_indices(self) -> Tensor | None:
        """Sorted test indices of the active request's forgotten classes, or ``None``."""
        return self.active.test_forget_indices

    @property
    def test_retain_indices(self) -> Tensor | None:
        """Test indices outside every class forgotten so far; ``None`` when there is no ``test_forget``."""
        if self.test_forget_indices is None or self.num_test is None:
            return None
        parts = [r.test_forget_indices for r in self.requests[: self.request + 1] if r.test_forget_indices is not None]
        return _complement(self.num_test, parts)

    @property
    def noisy_labels(self) -> Tensor | None:
        """Noisy label of each forget sample (aligned with ``forget_indices``), or ``None``."""
        return self.active.noisy_labels

    @property
    def clean_labels(self) -> Tensor | None:
        """Clean label of each forget sample under ``noisy_label``, or ``None``."""
        return self.active.clean_labels

    @property
    def is_noisy(self) -> bool:
        """Whether the training labels are corrupted on the forget set."""
        return self.noisy_labels is not None

    def noisy_map(self) -> dict[int, int]:
        """``{train_index: noisy_label}`` (empty unless noisy)."""
        if self.noisy_labels is None:
            return {}
        return dict(zip(self.forget_indices.tolist(), self.noisy_labels.tolist(), strict=True))

    def train_targets(self, targets: Tensor) -> Tensor:
        """Training targets with the noisy labels applied (a copy; the input when not noisy)."""
        if self.noisy_labels is None:
            return targets
        out = targets.clone()
        out[self.forget_indices] = self.noisy_labels.to(out.dtype)
        return out

    def for_request(self, request: int) -> SplitResult:
        """The same split with another active request; ``ValueError`` outside ``[0, len(requests))``."""
        if not is_integer(request) or not 0 <= request < len(self.requests):
            raise ValueError(f"request must be an integer in [0, {len(self.requests)}), got {request!r}")
        return replace(self, request=request)


# --------------------------------------------------------------------------------------------------------------
# Scenario base
# --------------------------------------------------------------------------------------------------------------
class Scenario:
    """Base class of all unlearning scenarios.

    Subclasses are immutable after construction, validate their own arguments in ``__init__`` and implement
    ``_draw`` (the forget set of one request within a pool of available training indices).
    """

    type_name: ClassVar[str] = "scenario"
    _fields: ClassVar[tuple[str, ...]] = ()
    _frozen: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"{type(self).__name__} is immutable; create a new scenario instead")
        object.__setattr__(self, name, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def params(self) -> dict[str, Any]:
        """Constructor parameters as given (JSON-serialisable)."""
        return {name: _to_jsonable(getattr(self, name)) for name in self._fields}

    def record(self) -> dict[str, Any]:
        """``{"type": <type name>, **params}``, as written to ``splits.json``."""
        return {"type": self.type_name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario) or type(self) is not type(other):
            return NotImplemented
        return self.record() == other.record()

    def __hash__(self) -> int:
        return hash(json.dumps(self.record(), sort_keys=True, default=str))

    # -- validation without data -----------------------------------------------------------------------------
    def check(self, info: DatasetInfo) -> None:
        """Validate the scenario against a dataset description (before any data is loaded).

        Raises:
            ValueError: If a class is unknown, a sub-class split is requested on a dataset without fine labels, ...
        """

    # -- split ----------------------------------------------------------------------------------------------
    def split(
        self,
        targets: Tensor | Sequence[int],
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
        *,
        test_targets: Tensor | Sequence[int] | None = None,
        fine_targets: Tensor | Sequence[int] | None = None,
        fine_test_targets: Tensor | Sequence[int] | None = None,
        fine_class_names: Sequence[str] | None = None,
        class_aliases: Mapping[str, int] | None = None,
        dataset: str | None = None,
        preset: Preset = "corrected",
    ) -> SplitResult:
        """Compute the split deterministically from the targets and ``seed``.

        Args:
            targets: Training targets ``y_0..y_{N-1}`` in the dataset's native order.
            num_classes: Number of classes ``C`` (default: ``len(class_names)`` or ``max(targets) + 1``).
            class_names: Class names, so classes may be given by name.
            seed: Split seed (integer ``>= 0``).
            test_targets: Test targets (needed for ``test_forget`` of class/sub-class scenarios).
            fine_targets: Fine training labels (CIFAR-20 sub-class removal).
            fine_test_targets: Fine test labels (CIFAR-20 sub-class removal).
            fine_class_names: Fine class names (CIFAR-20 sub-class removal).
            class_aliases: Additional accepted class names.
            dataset: Dataset name, checked against saved split files.
            preset: ``"corrected"`` or ``"reference"``; resolves quirk switches left at ``None``.

        Returns:
            The :class:`SplitResult`.
        """
        check_integer("seed", seed)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
        y = torch.as_tensor(targets, dtype=torch.long).flatten()
        if y.numel() == 0:
            raise ValueError("The training set is empty")
        names = tuple(class_names) if class_names is not None else None
        if num_classes is None:
            num_classes = len(names) if names is not None else int(y.max()) + 1
        info = DatasetInfo(
            num_classes=num_classes,
            name=dataset,
            class_names=names,
            class_aliases=dict(class_aliases or {}),
            fine_class_names=tuple(fine_class_names) if fine_class_names is not None else None,
        )
        ctx = SplitContext(
            info=info,
            targets=y,
            test_targets=None if test_targets is None else torch.as_tensor(test_targets, dtype=torch.long),
            fine_targets=None if fine_targets is None else torch.as_tensor(fine_targets, dtype=torch.long),
            fine_test_targets=(
                None if fine_test_targets is None else torch.as_tensor(fine_test_targets, dtype=torch.long)
            ),
            preset=preset,
        )
        self.check(info)
        return self._split(ctx, seed)

    def _split(self, ctx: SplitContext, seed: int) -> SplitResult:
        request = self._checked_draw(ctx, torch.arange(ctx.num_train), seed, prefix="")
        return SplitResult(
            num_train=ctx.num_train,
            num_test=None if ctx.test_targets is None else int(ctx.test_targets.numel()),
            requests=(request,),
            scenario=self.record(),
        )

    def _checked_draw(self, ctx: SplitContext, pool: Tensor, seed: int, prefix: str) -> RequestSplit:
        try:
            request = self._draw(ctx, pool, seed)
        except ValueError as err:
            raise ValueError(f"{prefix}{err}") from err
        n = int(request.forget_indices.numel())
        if n == 0:
            raise ValueError(f"{prefix}{type(self).__name__}: the forget set is empty")
        if n >= pool.numel():
            raise ValueError(
                f"{prefix}{type(self).__name__}: the forget set ({n} samples) is the whole available training set "
                f"({pool.numel()} samples), leaving an empty retain set"
            )
        return request

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        """Forget set within ``pool`` (sorted available training indices)."""
        raise NotImplementedError


def _class_forget(
    labels: Tensor, pool: Tensor, classes: Sequence[int], what: str, names: Sequence[str] | None
) -> Tensor:
    pool_labels = labels[pool]
    cls = torch.tensor(list(classes), dtype=torch.long)
    empty = [c for c in classes if not bool((pool_labels == c).any())]
    if empty:
        shown = [f"{c} ({names[c]})" if names is not None and c < len(names) else str(c) for c in empty]
        overlap = [c for c in empty if bool((labels == c).any())]
        reason = (
            "already forgotten by an earlier request (overlapping requests)" if overlap else "has no training sample"
        )
        raise ValueError(f"{what}: class {', '.join(shown)} {reason}")
    return pool[torch.isin(pool_labels, cls)]


# --------------------------------------------------------------------------------------------------------------
# Scenario types
# --------------------------------------------------------------------------------------------------------------
class ClassRemoval(Scenario):
    """Forget every training sample of the given classes.

    ``test_forget`` = test samples of those classes; ``test_retain`` = the other test samples.

    Args:
        classes: Class ids or names (non-empty, no duplicates).
    """

    type_name: ClassVar[str] = "class"
    _fields: ClassVar[tuple[str, ...]] = ("classes",)

    def __init__(self, classes: Sequence[int | str] = (0,)) -> None:
        self.classes: tuple[int | str, ...] = _class_list(classes, "ClassRemoval")
        self._freeze()

    def check(self, info: DatasetInfo) -> None:  # noqa: D102
        info.resolve(self.classes, "ClassRemoval")

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        classes = ctx.info.resolve(self.classes, "ClassRemoval")
        forget = _class_forget(ctx.targets, pool, classes, "ClassRemoval", ctx.info.class_names)
        test_forget = None
        if ctx.test_targets is not None:
            test_forget = torch.isin(ctx.test_targets, torch.tensor(classes)).nonzero().flatten()
        return RequestSplit(forget, test_forget, scenario_type=self.type_name)


class SubclassRemoval(Scenario):
    """Forget every training sample of the given fine CIFAR-100 classes, on ``cifar20`` only.

    Targets stay the coarse labels; ``test_forget`` holds the test samples of those fine classes.

    Args:
        subclasses: Fine class ids or names (non-empty, no duplicates).
    """

    type_name: ClassVar[str] = "subclass"
    _fields: ClassVar[tuple[str, ...]] = ("subclasses",)

    def __init__(self, subclasses: Sequence[int | str] = ("rocket",)) -> None:
        self.subclasses: tuple[int | str, ...] = _class_list(subclasses, "SubclassRemoval")
        self._freeze()

    def check(self, info: DatasetInfo) -> None:  # noqa: D102
        if info.fine_class_names is None:
            raise ValueError(
                f"SubclassRemoval is only available on dataset 'cifar20' (CIFAR100 with coarse targets and fine "
                f"labels), got dataset {info.name!r}"
            )
        info.resolve(self.subclasses, "SubclassRemoval", fine=True)

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        if ctx.fine_targets is None:
            raise ValueError(
                f"SubclassRemoval is only available on dataset 'cifar20' (needs fine labels), got {ctx.info.name!r}"
            )
        fine = ctx.info.resolve(self.subclasses, "SubclassRemoval", fine=True)
        forget = _class_forget(ctx.fine_targets, pool, fine, "SubclassRemoval", ctx.info.fine_class_names)
        test_forget = None
        if ctx.fine_test_targets is not None:
            test_forget = torch.isin(ctx.fine_test_targets, torch.tensor(fine)).nonzero().flatten()
        return RequestSplit(forget, test_forget, scenario_type=self.type_name)


class RandomRemoval(Scenario):
    """Forget a uniformly drawn subset of the training set: ``F = take(n, D, seed)``.

    ``n = count``, or ``floor(fraction * N)`` with ``N`` the training-set size. With neither given the fraction is
    0.1. Precision's preset is ``count=1000`` with seed 420; JiT/SSD's ``count=83``.

    Args:
        fraction: Fraction of the training set in ``(0, 1)``.
        count: Number of samples (integer ``>= 1``).
    """

    type_name: ClassVar[str] = "random"
    _fields: ClassVar[tuple[str, ...]] = ("fraction", "count")

    def __init__(self, fraction: float | None = None, count: int | None = None) -> None:
        if fraction is not None and count is not None:
            raise ValueError(f"RandomRemoval: give either fraction or count, not both (got {fraction}, {count})")
        if fraction is None and count is None:
            fraction = 0.1
        if count is not None and (not is_integer(count) or count < 1):
            raise ValueError(f"RandomRemoval: count must be an integer >= 1, got {count!r}")
        if fraction is not None:
            fraction = check_fraction("RandomRemoval: fraction", fraction, include_high=False)
        self.fraction: float | None = fraction
        self.count: int | None = count
        self._freeze()

    def _size(self, num_train: int) -> int:
        if self.count is not None:
            return self.count
        n = floor_fraction(float(self.fraction or 0.0), num_train)
        if n < 1:
            raise ValueError(
                f"{type(self).__name__}: fraction {self.fraction} of {num_train} samples rounds to an empty forget set"
            )
        return n

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        n = self._size(ctx.num_train)
        if n >= pool.numel():
            raise ValueError(
                f"{type(self).__name__}: cannot forget {n} samples out of {pool.numel()} available: the retain set "
                f"would be empty ({self._fields[-1]} must be < N)"
            )
        return RequestSplit(take(n, pool, seed).sort().values, scenario_type=self.type_name)


class KInstances(RandomRemoval):
    """L2UL's k-instance removal: ``RandomRemoval(count=k)``; classes are mixed.

    Args:
        k: Number of forgotten samples (integer ``>= 1``); L2UL uses 16 with seed 0.
    """

    type_name: ClassVar[str] = "k_instance"
    _fields: ClassVar[tuple[str, ...]] = ("k",)
    k: int

    def __init__(self, k: int = 16) -> None:
        if not is_integer(k) or k < 1:
            raise ValueError(f"KInstances: k must be an integer >= 1, got {k!r}")
        object.__setattr__(self, "k", k)
        super().__init__(count=k)


class ClassFraction(Scenario):
    """Forget a fraction of each listed class (LAF "data removal").

    For each class ``c`` in ascending order, ``F_c`` = the first ``floor(f_c * |D_c|)`` samples of a permutation of
    ``D_c`` drawn from one generator seeded with ``seed``.

    Args:
        fractions: ``{class id or name: fraction in (0, 1]}``; default LAF's ``{5..9: 0.4}``.
    """

    type_name: ClassVar[str] = "class_fraction"
    _fields: ClassVar[tuple[str, ...]] = ("fractions",)

    def __init__(self, fractions: dict[int | str, float] | None = None) -> None:
        if fractions is None:
            fractions = {5: 0.4, 6: 0.4, 7: 0.4, 8: 0.4, 9: 0.4}
        if not isinstance(fractions, Mapping) or not fractions:
            raise ValueError(
                f"ClassFraction: fractions must be a non-empty mapping class -> fraction, got {fractions!r}"
            )
        _class_list(list(fractions), "ClassFraction")
        for key, value in fractions.items():
            check_fraction(f"ClassFraction: fraction of class {key!r}", value, what=None)
        self.fractions: dict[int | str, float] = {k: float(v) for k, v in fractions.items()}
        self._freeze()

    def check(self, info: DatasetInfo) -> None:  # noqa: D102
        info.resolve(list(self.fractions), type(self).__name__)

    def _resolved(self, info: DatasetInfo) -> list[tuple[int, float]]:
        ids = info.resolve(list(self.fractions), type(self).__name__)
        return sorted(zip(ids, self.fractions.values(), strict=True))

    def _draw_fraction(self, ctx: SplitContext, pool: Tensor, generator: torch.Generator) -> Tensor:
        what = type(self).__name__
        parts = []
        for cls, frac in self._resolved(ctx.info):
            members = _class_forget(ctx.targets, pool, [cls], what, ctx.info.class_names)
            n = floor_fraction(frac, members.numel())
            if n < 1:
                raise ValueError(
                    f"{what}: fraction {frac} of the {members.numel()} samples of class {cls} rounds to 0 samples"
                )
            parts.append(take(n, members, generator))
        return torch.cat(parts).sort().values

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        forget = self._draw_fraction(ctx, pool, seeded_generator(seed))
        return RequestSplit(forget, scenario_type=self.type_name)


class NoisyLabels(ClassFraction):
    r"""LAF's noisy-label scenario: corrupt the labels of a fraction of some classes.

    ``F`` = ``ClassFraction({c: rate for c in classes})``; then, for each forget sample in ascending index order and
    with the same generator, a new label uniform on ``A_i`` (``torch.randint``): ``uniform_other`` (corrected):
    ``{0..C-1} \ {y_i}``; ``laf_legacy`` (reference): ``{0..8} \ {y_i}`` (label 9 is never a noisy label).
    The original model is pretrained on the corrupted set; ``forget`` carries the noisy labels and
    ``forget_clean`` the clean ones.

    Args:
        classes: Corrupted classes (default 0..4).
        rate: Fraction of each class corrupted, in ``(0, 1]`` (default 0.6).
        relabel: ``"uniform_other"`` or ``"laf_legacy"``; ``None`` follows the datamodule's preset.
    """

    type_name: ClassVar[str] = "noisy_label"
    _fields: ClassVar[tuple[str, ...]] = ("classes", "rate", "relabel")
    classes: tuple[int | str, ...]
    rate: float
    relabel: Relabel | None

    def __init__(
        self,
        classes: Sequence[int | str] = (0, 1, 2, 3, 4),
        rate: float = 0.6,
        relabel: Relabel | None = None,
    ) -> None:
        check_fraction("NoisyLabels: rate", rate, what=None)
        if relabel is not None and relabel not in RELABEL_MODES:
            raise ValueError(f"NoisyLabels: relabel must be one of {RELABEL_MODES} or None, got {relabel!r}")
        cls = _class_list(classes, "NoisyLabels")
        object.__setattr__(self, "classes", cls)
        object.__setattr__(self, "rate", float(rate))
        object.__setattr__(self, "relabel", relabel)
        super().__init__({c: float(rate) for c in cls})

    def _relabel_mode(self, preset: str) -> str:
        if self.relabel is not None:
            return str(self.relabel)
        return "laf_legacy" if preset == "reference" else "uniform_other"

    def check(self, info: DatasetInfo) -> None:  # noqa: D102
        super().check(info)
        if info.num_classes < 2:
            raise ValueError(f"NoisyLabels needs at least 2 classes, got {info.num_classes}")

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        mode = self._relabel_mode(ctx.preset)
        num_classes = ctx.info.num_classes
        if mode == "laf_legacy" and num_classes < 9:
            raise ValueError(
                f"NoisyLabels: relabel='laf_legacy' draws from labels 0..8 and needs >= 9 classes, got {num_classes}"
            )
        generator = seeded_generator(seed)
        forget = self._draw_fraction(ctx, pool, generator)
        clean = ctx.targets[forget]
        top = 9 if mode == "laf_legacy" else num_classes
        noisy = torch.empty_like(clean)
        for pos, label in enumerate(clean.tolist()):
            size = top - 1 if label < top else top
            r = int(torch.randint(0, size, (1,), generator=generator))
            noisy[pos] = r + 1 if label < top and r >= label else r
        return RequestSplit(forget, None, noisy, clean, scenario_type=self.type_name)


class Indices(Scenario):
    """An explicit forget list.

    Either ``indices``, or ``split_file``: a text file of comma- or whitespace-separated integers (like Precision's
    ``forget_set.txt``), or a saved ``splits.json`` which restores every field (noisy labels, test forget set,
    continual requests, drawn subsets) after checking the dataset name, ``N`` and the digest.

    Args:
        indices: Training indices (non-empty, unique, ``>= 0``).
        split_file: Path of a text list or a ``splits.json``.
    """

    type_name: ClassVar[str] = "indices"
    _fields: ClassVar[tuple[str, ...]] = ("indices", "split_file")

    def __init__(self, indices: Sequence[int] | None = None, split_file: str | None = None) -> None:
        if (indices is None) == (split_file is None):
            raise ValueError("Indices: give exactly one of indices or split_file")
        if indices is not None:
            values = list(indices)
            if not values:
                raise ValueError("Indices: the index list is empty")
            bad = [v for v in values if not is_integer(v) or v < 0]
            if bad:
                raise ValueError(f"Indices: indices must be integers >= 0; offending: {_offenders(bad)}")
            _check_duplicates(values)
            indices = tuple(values)
        self.indices: tuple[int, ...] | None = indices
        self.split_file: str | None = None if split_file is None else str(split_file)
        self._freeze()

    @property
    def is_split_json(self) -> bool:
        """Whether ``split_file`` is a saved ``splits.json`` (rather than a plain list)."""
        if self.split_file is None:
            return False
        if self.split_file.endswith(".json"):
            return True
        path = Path(self.split_file)
        return path.is_file() and path.read_text().lstrip().startswith("{")

    def _load_list(self) -> list[int]:
        if self.indices is not None:
            return list(self.indices)
        path = Path(str(self.split_file))
        if not path.is_file():
            raise ValueError(f"Indices: split_file {str(path)!r} does not exist")
        tokens = [t for t in re.split(r"[\s,]+", path.read_text()) if t]
        try:
            values = [int(t) for t in tokens]
        except ValueError as err:
            raise ValueError(f"Indices: {str(path)!r} must hold comma- or whitespace-separated integers") from err
        if not values:
            raise ValueError(f"Indices: {str(path)!r} holds no index")
        _check_duplicates(values)
        return values

    def _draw(self, ctx: SplitContext, pool: Tensor, seed: int) -> RequestSplit:
        if self.is_split_json:
            raise ValueError("Indices: a splits.json file can only be restored as the whole scenario")
        values = self._load_list()
        n = ctx.num_train
        out = [v for v in values if not 0 <= v < n]
        if out:
            raise ValueError(f"Indices: indices out of range [0, {n}): {_offenders(sorted(out))}")
        forget = torch.tensor(sorted(values), dtype=torch.long)
        missing = forget[~torch.isin(forget, pool)]
        if missing.numel():
            raise ValueError(
                "Indices: indices already forgotten by an earlier request (overlapping requests): "
                f"{_offenders(missing.tolist())}"
            )
        return RequestSplit(forget, scenario_type=self.type_name)

    def _split(self, ctx: SplitContext, seed: int) -> SplitResult:
        if not self.is_split_json:
            return super()._split(ctx, seed)
        from lightning_unlearn.datamodules.split_io import restore_split  # split_io builds on this module

        return restore_split(self, ctx)


class Continual(Scenario):
    r"""A sequence of disjoint requests.

    Request ``t`` is drawn from the pool ``D \ (F_0 ∪ ... ∪ F_{t-1})`` with seed ``seed + t`` (request 0 equals the
    single-request split). A class request takes that class's samples still in the pool; explicit indices must lie
    in the pool. Sizes given by ``fraction`` are fractions of the whole training set.

    Args:
        requests: Scenarios of each request (any type except ``NoisyLabels``/``Continual``); default 5 x
            ``KInstances(16)``.
    """

    type_name: ClassVar[str] = "continual"
    _fields: ClassVar[tuple[str, ...]] = ("requests",)

    def __init__(self, requests: Sequence[Scenario] | None = None) -> None:
        if requests is None:
            requests = [KInstances(16) for _ in range(5)]
        reqs = tuple(requests)
        if not reqs:
            raise ValueError("Continual: at least one request is needed")
        for t, req in enumerate(reqs):
            if not isinstance(req, Scenario):
                raise ValueError(f"Continual: request {t} must be a Scenario, got {req!r}")
            if isinstance(req, (NoisyLabels, Continual)):
                raise ValueError(
                    f"Continual: request {t} is {type(req).__name__}; allowed request types are ClassRemoval, "
                    "SubclassRemoval, RandomRemoval, KInstances, ClassFraction, Indices"
                )
            if isinstance(req, Indices) and req.split_file is not None and req.split_file.endswith(".json"):
                raise ValueError(f"Continual: request {t} restores a splits.json; use a plain index list instead")
        self.requests: tuple[Scenario, ...] = reqs
        self._freeze()

    def check(self, info: DatasetInfo) -> None:  # noqa: D102
        for t, req in enumerate(self.requests):
            try:
                req.check(info)
            except ValueError as err:
                raise ValueError(f"Continual request {t}: {err}") from err

    def _split(self, ctx: SplitContext, seed: int) -> SplitResult:
        pool = torch.arange(ctx.num_train)
        out = []
        for t, req in enumerate(self.requests):
            drawn = req._checked_draw(ctx, pool, seed + t, prefix=f"Continual request {t}: ")
            out.append(drawn)
            pool = pool[~torch.isin(pool, drawn.forget_indices)]
        return SplitResult(
            num_train=ctx.num_train,
            num_test=None if ctx.test_targets is None else int(ctx.test_targets.numel()),
            requests=tuple(out),
            continual=True,
            scenario=self.record(),
        )


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------
def _class_list(classes: Any, what: str) -> tuple[int | str, ...]:
    if isinstance(classes, (str, int)):
        classes = [classes]
    try:
        values = list(classes)
    except TypeError as err:
        raise ValueError(f"{what}: classes must be a list of class ids or names, got {classes!r}") from err
    if not values:
        raise ValueError(f"{what}: the class list is empty")
    for value in values:
        if not (is_integer(value) or isinstance(value, str)):
            raise ValueError(f"{what}: classes must be integer ids or names, got {value!r}")
        if is_integer(value) and value < 0:
            raise ValueError(f"{what}: class ids must be >= 0, got {value}")
    dups = sorted({str(v) for v in values if values.count(v) > 1})
    if dups:
        raise ValueError(f"{what}: duplicate classes {dups}")
    return tuple(values)


def _check_duplicates(values: Sequence[int]) -> None:
    seen: set[int] = set()
    dups: list[int] = []
    for v in values:
        if v in seen:
            dups.append(v)
        seen.add(v)
    if dups:
        raise ValueError(f"Indices: duplicate indices: {_offenders(sorted(set(dups)))}")
