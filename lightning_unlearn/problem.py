"""Your classifier and data in place of an embedded dataset: the shipped method presets run on your problem.

The benchmark (``lightning-unlearn-benchmark --classifier ... --data ...``) and the audit
(``lightning-unlearn-audit --method ... --classifier ... --data ...``) read two YAML fragments:

- ``--classifier FILE``: the original classifier, the spec a method config has under ``model.init_args.model``
  (``{class_path: ..., init_args: ...}``; e.g. :func:`~lightning_unlearn.models.load_weights` around
  ``torchvision.models.resnet18``, or :func:`~lightning_unlearn.models.load_classifier`). A fragment with a
  top-level ``model:`` (``model: {init_args: {model: SPEC}}``) is read too.
- ``--data FILE``: the datamodule spec (``{class_path: ..., init_args: ...}``, a library datamodule such as
  :class:`~lightning_unlearn.datamodules.DatasetDataModule` or
  :class:`~lightning_unlearn.datamodules.ImageFolderDataModule`), its ``scenario`` included; a fragment with a
  top-level ``data:`` is read too.

:func:`compose` substitutes them into a shipped preset: the method and its arguments, the trainer settings and the
preset's data-loading settings that are part of the method's budget (``batch_size``, ``labelled_fraction``: any
``data.init_args`` key of the preset except ``scenario``) are the preset's; the classifier, the dataset and the
scenario are yours. :func:`compose_oracle` builds the retrain oracle's run from a fit config of the retraining
(e.g. :class:`~lightning_unlearn.methods.RetrainOracle` with its optimiser and ``trainer.max_epochs``) the same
way, on the retain set (``mode: retrain``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SCENARIO_PRESETS",
    "UserProblem",
    "add_problem_arguments",
    "compose",
    "compose_oracle",
    "load_spec",
    "preset_scenario",
]

_DM = "lightning_unlearn.datamodules"

#: Preset folder per scenario class: the shipped settings a scenario of that kind uses.
SCENARIO_PRESETS: dict[str, str] = {
    f"{_DM}.ClassRemoval": "class_removal",
    f"{_DM}.RandomRemoval": "random_10pct",
    f"{_DM}.KInstances": "k16",
    f"{_DM}.NoisyLabels": "noisy_labels",
}


def load_spec(path: str | Path, key: str) -> dict[str, Any]:
    """A ``{class_path, init_args}`` spec from a YAML file: the file itself, or its top-level ``key`` entry.

    For ``key="model"`` a LightningCLI fragment ``model: {init_args: {model: SPEC}}`` gives ``SPEC``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it holds no mapping with a ``class_path``.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    content = yaml.safe_load(file.read_text())
    if isinstance(content, Mapping) and key in content and "class_path" not in content:
        content = content[key]
        if key == "model" and isinstance(content, Mapping) and "class_path" not in content:
            content = (content.get("init_args") or {}).get("model")
    if not isinstance(content, Mapping) or not isinstance(content.get("class_path"), str):
        raise ValueError(
            f"{file}: expected a spec with a class_path (class_path: ..., init_args: ...), or a fragment with a "
            f"top-level '{key}:' holding one"
        )
    return {"class_path": content["class_path"], "init_args": dict(content.get("init_args") or {})}


def preset_scenario(data: Mapping[str, Any]) -> str:
    """The preset folder for the scenario of a datamodule spec (class removal -> ``class_removal``, ...).

    Raises:
        ValueError: If the spec has no scenario, or one of a kind without presets (the message names the kinds).
    """
    scenario = (data.get("init_args") or {}).get("scenario")
    class_path = scenario.get("class_path") if isinstance(scenario, Mapping) else None
    by_name = {k.rsplit(".", 1)[-1]: v for k, v in SCENARIO_PRESETS.items()}
    name = class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else None
    if name in by_name:
        return by_name[name]
    raise ValueError(
        f"the data's scenario {class_path!r} has no shipped presets; use one of {', '.join(by_name)}, or name the "
        "preset folder with --scenarios"
    )


@dataclass(frozen=True)
class UserProblem:
    """The user's classifier, data, scenarios and retrain oracle (picklable: it travels to the worker processes).

    Args:
        classifier: The classifier spec (``model.init_args.model`` of the runs).
        data: The datamodule spec.
        scenarios: Preset folder -> scenario spec run on the user's data.
        oracle: A retrain oracle's weights (one scenario only), or ``None`` to train one per scenario.
        oracle_config: A fit config of the retraining (method, optimiser, epochs), used without ``oracle``.
        name: A short name for tables.
    """

    classifier: dict[str, Any]
    data: dict[str, Any]
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    oracle: str | None = None
    oracle_config: str | None = None
    name: str = "user"

    def __post_init__(self) -> None:
        """Check that the oracle is defined, once per scenario."""
        if not self.scenarios:
            raise ValueError("a user problem needs at least one scenario")
        if self.oracle is None and self.oracle_config is None:
            raise ValueError(
                "give the retrain oracle: --oracle CKPT (weights of a model retrained without the forget set) or "
                "--oracle-config FILE (a fit config that retrains, trained once and cached)"
            )
        if self.oracle is not None and len(self.scenarios) > 1:
            raise ValueError("--oracle gives one oracle: run one scenario with it, or use --oracle-config")
        if self.oracle is not None and not Path(self.oracle).is_file():
            raise FileNotFoundError(f"oracle checkpoint not found: {self.oracle}")
        if self.oracle_config is not None and not Path(self.oracle_config).is_file():
            raise FileNotFoundError(f"oracle config not found: {self.oracle_config}")

    def data_for(self, scenario: str) -> dict[str, Any]:
        """The user's datamodule spec running ``scenario``."""
        data = copy.deepcopy(self.data)
        data.setdefault("init_args", {})["scenario"] = copy.deepcopy(self.scenarios[scenario])
        return data

    def oracle_key(self, scenario: str) -> str:
        """A short hash of what the oracle of ``scenario`` is trained from (its cache folder's name)."""
        text = Path(self.oracle_config).read_text() if self.oracle_config else ""
        blob = json.dumps([self.classifier, self.data_for(scenario), text], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def compose(preset: Mapping[str, Any], classifier: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """A shipped preset with the user's classifier and data substituted (see the module docstring).

    Args:
        preset: The preset config (a dict as read from its YAML).
        classifier: The classifier spec.
        data: The datamodule spec, its scenario included.

    Returns:
        A new config dict; ``preset`` is not modified.
    """
    config = copy.deepcopy(dict(preset))
    config.setdefault("model", {}).setdefault("init_args", {})["model"] = copy.deepcopy(dict(classifier))
    preset_args = dict((config.get("data") or {}).get("init_args") or {})
    preset_args.pop("scenario", None)
    user = copy.deepcopy(dict(data))
    user.setdefault("init_args", {}).update(copy.deepcopy(preset_args))
    config["data"] = user
    return config


def compose_oracle(oracle_config: Mapping[str, Any], classifier: Mapping[str, Any], data: Mapping[str, Any]) -> dict:
    """The retrain oracle's fit config: the user's retraining config on the retain set of the user's data."""
    config = compose(oracle_config, classifier, data)
    config["data"]["init_args"]["mode"] = "retrain"
    return config


def add_problem_arguments(parser: Any, description: str) -> Any:
    """Add the ``--classifier`` / ``--data`` options (an argument group, returned for further options)."""
    group = parser.add_argument_group("your own problem", description)
    group.add_argument(
        "--classifier", default=None, help="YAML spec of the original classifier (class_path, init_args)"
    )
    group.add_argument("--data", default=None, help="YAML spec of the datamodule, its scenario included")
    return group
