"""Search spaces of ``lightning-unlearn-tune``: each method's few decisive knobs, overridable by a YAML file.

A space maps dotted config paths (``model.init_args.alpha``, ``trainer.max_epochs``) to a parameter spec::

    model.init_args.alpha: {type: float, low: 0.05, high: 100, log: true}
    trainer.max_epochs: {type: int, low: 1, high: 10}
    model.init_args.importance: {type: categorical, choices: [batch, per_sample]}

:data:`DEFAULT_SPACES` holds the default space of each method class (one table, keyed by class name). Published
hyperparameters rarely transfer between models and datasets (e.g. SSD's alpha/lambda of Foster et al., AAAI 2024,
select nothing for class removal on the embedded digits), so the ranges span several orders of magnitude around the
papers' values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_unlearn.validation import is_number

__all__ = ["DEFAULT_SPACES", "PARAM_TYPES", "MethodSpace", "Param", "default_space", "load_space", "parse_space"]

#: Parameter types of a space entry.
PARAM_TYPES = ("float", "int", "categorical")
_KEYS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Param:
    """One searched value: a float or int range (optionally log-scaled or stepped) or a list of choices.

    Raises:
        ValueError: On an unknown type, a missing or inverted range (``low > high``), a log range that is not
            positive, a log range with a step, or a categorical without choices.
    """

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        """Check the spec."""
        if self.type not in PARAM_TYPES:
            raise ValueError(f"type must be one of {PARAM_TYPES}, got {self.type!r}")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list 'choices'")
            return
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        for name in ("low", "high"):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low!r} > high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low!r}")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step")
        if self.step is not None and not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step!r}")

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna ``trial`` samples for the parameter ``name``."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices or ()))
        low, high = float(self.low or 0), float(self.high or 0)  # both set: checked in __post_init__
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(name, int(low), int(high), step=step, log=self.log)
        return trial.suggest_float(name, low, high, step=self.step, log=self.log)

    def as_dict(self) -> dict[str, Any]:
        """The YAML form of the spec."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices or ())}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class MethodSpace:
    """A method's default space and how its stage epochs add up to its epoch budget.

    Args:
        params: Dotted config path -> parameter spec.
        stage_epochs: For multi-stage methods, the method arguments holding stage epochs and how many stages each
            sets (LAF trains two VAEs of ``vae_epochs`` each): a sampled change of ``n`` epochs changes the budget
            by ``n`` times that count. The method derives ``trainer.max_epochs`` from its stages; only a config
            that still sets it gets it updated.
    """

    params: dict[str, Param]
    stage_epochs: dict[str, int] = field(default_factory=dict)


def _f(low: float, high: float, log: bool = True) -> Param:
    return Param("float", low, high, log=log)


def _i(low: int, high: int) -> Param:
    return Param("int", low, high)


_LR = "model.init_args.lr"
_EPOCHS = "trainer.max_epochs"
_SSD = MethodSpace({"model.init_args.alpha": _f(0.01, 100.0), "model.init_args.lambda_": _f(1e-4, 10.0)})
_PRUNING = MethodSpace(
    {"model.init_args.quantile": _f(0.05, 0.9, log=False), "model.init_args.retain_lr": _f(1e-4, 0.1)}
)
_GRADIENT = MethodSpace({_LR: _f(1e-5, 0.1), _EPOCHS: _i(1, 10)})

#: Default search space per method class name.
DEFAULT_SPACES: dict[str, MethodSpace] = {
    "SSD": _SSD,
    "LFSSD": _SSD,
    "LAF": MethodSpace(
        {
            "model.init_args.unlearn_epochs": _i(2, 30),
            "model.init_args.lr_ue": _f(1e-6, 1e-3),
            "model.init_args.lr_ra": _f(1e-6, 1e-3),
        },
        stage_epochs={"unlearn_epochs": 1},
    ),
    "Pruning": _PRUNING,
    "PruningLast": _PRUNING,
    "PruningComplex": _PRUNING,
    "RandomLabel": _GRADIENT,
    "Finetune": _GRADIENT,
    "GradientAscent": _GRADIENT,
    "JiT": MethodSpace({_LR: _f(1e-5, 1e-2), "model.init_args.sigma": _f(0.01, 2.0)}),
    "SCRUB": MethodSpace(
        {_LR: _f(1e-4, 0.1), "model.init_args.alpha": _f(1e-4, 1.0), "model.init_args.gamma": _f(0.1, 10.0)}
    ),
    "SalUn": MethodSpace({_LR: _f(1e-4, 0.1), "model.init_args.mask_ratio": _f(0.05, 1.0, log=False)}),
    "L1Sparse": MethodSpace({"model.init_args.alpha": _f(1e-5, 0.1), _LR: _f(1e-3, 0.1)}),
    "BadTeaching": MethodSpace({_LR: _f(1e-5, 1e-2), "model.init_args.temperature": _f(1.0, 8.0)}),
    "UNSIR": MethodSpace(
        {
            "model.init_args.impair_lr": _f(1e-5, 1e-2),
            "model.init_args.repair_lr": _f(1e-5, 1e-2),
            "model.init_args.noise_lr": _f(1e-2, 1.0),
        }
    ),
    "BoundaryShrink": MethodSpace({_LR: _f(1e-5, 1e-2), "model.init_args.bound": _f(0.01, 0.5)}),
    "BoundaryExpanding": MethodSpace({_LR: _f(1e-5, 1e-2)}),
    "Poison": MethodSpace({_LR: _f(1e-4, 0.05)}),
    "PoisonFull": MethodSpace({_LR: _f(1e-4, 0.05)}),
    "Hybrid": MethodSpace({"model.init_args.forget_lr": _f(1e-4, 0.05), "model.init_args.retain_lr": _f(1e-4, 0.05)}),
    "ActivationReset": MethodSpace(
        {"model.init_args.toll": _f(0.3, 0.95, log=False), "model.init_args.retain_lr": _f(1e-4, 0.05)}
    ),
}


def default_space(method_class: str) -> MethodSpace:
    """The default space of a method class (its name or ``class_path``).

    Raises:
        ValueError: If the table has no space for it (the message names the methods that have one).
    """
    name = method_class.rsplit(".", 1)[-1]
    if name not in DEFAULT_SPACES:
        raise ValueError(
            f"no default search space for {name!r} (methods with one: {tuple(DEFAULT_SPACES)}); give --space FILE"
        )
    return DEFAULT_SPACES[name]


def parse_space(spec: Mapping[str, Any]) -> dict[str, Param]:
    """A space from its YAML form ``{dotted.path: {type, low, high, log, step, choices}}``.

    Raises:
        ValueError: On a path that is not dotted text, an entry that is not a mapping, an unknown key (the
            message names the allowed ones) or an invalid spec (see :class:`Param`).
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("a search space is a non-empty mapping of dotted config paths to parameter specs")
    out: dict[str, Param] = {}
    for path, entry in spec.items():
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise ValueError(f"a space key must be a dotted config path such as model.init_args.lr, got {path!r}")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: expected a mapping with keys {sorted(_KEYS)}, got {entry!r}")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        if "type" not in entry:
            raise ValueError(f"{path}: 'type' is required, one of {PARAM_TYPES}")
        try:
            out[path] = Param(
                type=entry["type"],
                low=entry.get("low"),
                high=entry.get("high"),
                log=bool(entry.get("log", False)),
                step=entry.get("step"),
                choices=tuple(entry["choices"]) if entry.get("choices") is not None else None,
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    return out


def load_space(path: str | Path) -> dict[str, Param]:
    """A space from a YAML file (see :func:`parse_space`)."""
    return parse_space(yaml.safe_load(Path(path).read_text()) or {})
