"""``lightning-unlearn-tune``: search a method's hyperparameters with Optuna (gap to retraining or retrain-free).

Published hyperparameters rarely transfer between models and datasets, so the tuner fits the method's config once per
trial with sampled values (the same fit as the benchmark's: :func:`lightning_unlearn.benchmark.run_config` on the
embedded datasets, :func:`lightning_unlearn.jobs.cli_fit` always), reads the final metrics and returns the objective:

- ``gap_to_retrain`` (minimise): the benchmark's score, the mean of ``|unlearned - retrained|`` over forget accuracy,
  retain accuracy, test accuracy (on the remaining classes for class removal) and the SVC-confidence MIA efficacy,
  in percentage points (``gap/avg`` x 100). The oracle is ``--oracle PATH`` (a state dict of the config's
  ``load_classifier`` architecture) or, for the embedded datasets' scenarios, the benchmark's cached retrained model.
- ``forget_quality`` (minimise, no oracle): ``100 |acc_forget - target| + 100 sum_s max(0, acc0_s - acc_s - tol)``
  over ``s`` in retain and test accuracy (test on the remaining classes for class removal), with ``acc0`` the original
  model's accuracies, ``tol`` the ``--tolerance`` (an accuracy fraction) and ``target`` 0 when whole classes are
  removed (a retrained model never predicts them) else the test accuracy (a retrained model treats the forget set
  like unseen data).
- ``cost`` (minimise): the unlearning time in seconds (``cost/unlearn_time_s``), for a multi-objective search such
  as ``--objective gap_to_retrain,cost`` whose Pareto front is reported.

Every trial uses the same ``--seed``, so trials differ only by their hyperparameters. The study lives in an Optuna
storage (default: ``<out>/study.db``, SQLite) with ``load_if_exists``: a killed run resumes without repeating its
finished trials, and a trial left running is marked failed and retried with the same values. Multi-epoch trials report a
retrain-free proxy (the ``forget_quality`` formula on forget and test accuracy) after each epoch to a median pruner.

Outputs in ``--out``: ``best.yaml`` (a runnable config, ``lightning-unlearn fit --config <out>/best.yaml``),
``trials.csv``, ``trials.md`` (with the Pareto front of a multi-objective search), ``study.db`` and ``trials/``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import json
import math
import shlex
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lightning_unlearn.jobs import Job, JobError, add_ray_address_argument, cli_fit, import_class, run_jobs, takes_seed
from lightning_unlearn.search_spaces import MethodSpace, default_space, load_space, parse_space
from lightning_unlearn.validation import check_fraction

__all__ = [
    "OBJECTIVES",
    "TrialPruning",
    "TuneResult",
    "apply_values",
    "load_config",
    "main",
    "objective_values",
    "tune",
]

#: Objectives of the tuner (all minimised).
OBJECTIVES = ("gap_to_retrain", "forget_quality", "cost")
_NEVER = 1_000_000  # check_val_every_n_epoch: no validation during the run, one evaluation after it
_HEARTBEAT_S = 30


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError(
            "lightning-unlearn-tune needs Optuna: pip install 'lightning-unlearn[tune]' (or pip install optuna)"
        ) from error
    return optuna


# ---------------------------------------------------------------------------------------------- configs
def load_config(configs: Sequence[str | Path]) -> dict[str, Any]:
    """The configs (shipped short names or files), merged in order like repeated ``--config``.

    Raises:
        ValueError: If no config is given, a name is neither a file nor a shipped config, or a file is no mapping.
    """
    from lightning_unlearn.presets import resolve_config_args

    if not configs:
        raise ValueError("give at least one --config (a shipped config name or a YAML file)")
    merged: dict[str, Any] = {}
    for name in configs:
        path = Path(resolve_config_args(["--config", str(name)])[1])
        if not path.is_file():
            raise ValueError(f"no config file or shipped config named {str(name)!r}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} is not a YAML mapping")
        _merge(merged, loaded)
    if not isinstance(merged.get("model"), dict) or "class_path" not in merged["model"]:
        raise ValueError("the config needs a model: {class_path: ..., init_args: ...} (the unlearning method)")
    return merged


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _get(config: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {path}: {part} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def apply_values(
    config: Mapping[str, Any], values: Mapping[str, Any], space: MethodSpace | None = None
) -> dict[str, Any]:
    """A copy of ``config`` with the dotted-path ``values`` set.

    A method that declares its epoch budget derives ``trainer.max_epochs`` from its stage epochs, so a config without
    ``trainer.max_epochs`` (the shipped presets) needs nothing more. A config that sets it (consistently with the
    stages) gets it updated by the sampled stage-epoch changes, weighted by ``space.stage_epochs``.
    """
    out = copy.deepcopy(dict(config))
    stage_epochs = space.stage_epochs if space is not None else {}
    added = 0
    for path, value in values.items():
        name = path.removeprefix("model.init_args.")
        if name in stage_epochs and path != name:
            old = _get(out, path, _signature_default(out, name))
            added += stage_epochs[name] * (int(value) - int(old))
        _set(out, path, value)
    if added and _get(out, "trainer.max_epochs") is not None:
        _set(out, "trainer.max_epochs", int(_get(out, "trainer.max_epochs")) + added)
    return out


def _signature_default(config: Mapping[str, Any], name: str) -> Any:
    parameter = inspect.signature(import_class(config["model"]["class_path"])).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


# ---------------------------------------------------------------------------------------------- objectives
def objective_values(
    objectives: Sequence[str], final: Mapping[str, float], initial: Mapping[str, float], tolerance: float
) -> list[float]:
    """The objectives' values (all minimised) from a run's final and initial metrics (see the module docstring).

    Raises:
        KeyError: If a metric an objective needs is missing.
    """
    out = []
    for name in objectives:
        if name == "gap_to_retrain":
            out.append(100.0 * float(final["gap/avg"]))
        elif name == "forget_quality":
            out.append(_forget_quality(final, initial, tolerance, with_retain=True))
        else:
            out.append(float(final["cost/unlearn_time_s"]))
    return out


def _test_name(metrics: Mapping[str, float]) -> str:
    return "acc/test_retain" if "acc/test_retain" in metrics else "acc/test"


def _forget_quality(
    final: Mapping[str, float], initial: Mapping[str, float], tolerance: float, with_retain: bool
) -> float:
    test = _test_name(final)
    target = 0.0 if "acc/test_forget" in final else float(final["acc/test"])
    value = abs(float(final["acc/forget"]) - target)
    for split in (["acc/retain"] if with_retain else []) + [test]:
        value += max(0.0, float(initial[split]) - float(final[split]) - tolerance)
    return 100.0 * value


class TrialPruning(Callback):
    """Report a retrain-free proxy of the objective to an Optuna trial after each epoch; stop a hopeless trial.

    The proxy is the ``forget_quality`` formula on forget and test accuracy (retain accuracy is left out to keep the
    pass short), measured on the datamodule's evaluation loaders with the random state saved and restored, so a
    trial's training is the same with or without this callback. After the report, ``trial.should_prune()`` raising
    ``optuna.TrialPruned`` ends the fit. The last epoch is not reported (the final metrics are the objective).

    Args:
        storage: The study's Optuna storage URL.
        study_name: The study's name.
        trial_id: The trial's storage id.
        tolerance: The accuracy drop tolerated without penalty (a fraction).
        pruner: ``class_path`` of the Optuna pruner deciding (the study's; a storage does not keep it).
        pruner_args: Its arguments.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        tolerance: float = 0.01,
        pruner: str = "optuna.pruners.MedianPruner",
        pruner_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pruner = pruner
        self.pruner_args = dict(pruner_args or {})
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.tolerance = tolerance
        self.initial: dict[str, float] = {}
        self._trial: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure the original model's accuracies and open the trial."""
        optuna = _import_optuna()
        pruner = import_class(self.pruner)(**self.pruner_args)
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=pruner)
        self._trial = optuna.trial.Trial(study, self.trial_id)
        self.initial = self._accuracies(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report the proxy; raise ``optuna.TrialPruned`` when the pruner says so."""
        epoch = trainer.current_epoch
        if self._trial is None or trainer.max_epochs is None or epoch + 1 >= trainer.max_epochs:
            return
        value = _forget_quality(self._accuracies(trainer, pl_module), self.initial, self.tolerance, with_retain=False)
        self._trial.report(value, epoch)
        if self._trial.should_prune():
            raise _import_optuna().TrialPruned(f"pruned after epoch {epoch} (proxy {value:.2f})")

    @torch.no_grad()
    def _accuracies(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        loaders = trainer.datamodule.val_dataloader()  # type: ignore[attr-defined]
        wanted = ["acc/forget", "acc/test", "acc/test_retain", "acc/test_forget"]
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        out: dict[str, float] = {}
        try:
            with torch.random.fork_rng(devices=[]):
                for name in wanted:
                    split = name.removeprefix("acc/")
                    if split not in loaders:
                        continue
                    correct = total = 0
                    for batch in loaders[split]:  # LabelledBatch
                        prediction = pl_module(batch.input.to(pl_module.device)).argmax(1).cpu()
                        correct += int((prediction == batch.target).sum())
                        total += len(batch.target)
                    out[name] = correct / max(total, 1)
        finally:
            for module, mode in modes.items():
                module.train(mode)
        return out


# ---------------------------------------------------------------------------------------------- one trial (worker)
def trial_job(config: dict[str, Any], pruning: dict[str, Any] | None, result: Path, run_dir: Path) -> None:
    """Fit one trial's config and write its final and initial metrics (or that it was pruned) to ``result``."""
    from lightning_unlearn.callbacks import SplitMetricsCallback, UnlearningCost, evaluate_together
    from lightning_unlearn.callbacks.summary import collect_metrics

    run_dir.mkdir(parents=True, exist_ok=True)
    if pruning is not None:
        config = copy.deepcopy(config)
        extra = {"class_path": "lightning_unlearn.tune.TrialPruning", "init_args": pruning}
        config["trainer"]["callbacks"] = [*config["trainer"].get("callbacks", []), extra]
    path = run_dir / "trial.yaml"
    path.write_text(json.dumps(config, indent=2))
    optuna = _import_optuna()
    record: dict[str, Any]
    try:
        cli = cli_fit([str(path)], [], run_dir)
    except optuna.TrialPruned as pruned:
        record = {"state": "pruned", "message": str(pruned)}
    else:
        trainer, module = cli.trainer, cli.model
        evaluated = [c for c in trainer.callbacks if isinstance(c, SplitMetricsCallback)]
        missing = [c for c in evaluated if not c.final_metrics]
        for callback, values in zip(missing, evaluate_together(missing, trainer, module), strict=True):
            callback.final_metrics = values
        initial, final = collect_metrics(trainer.callbacks)
        for callback in trainer.callbacks:
            if isinstance(callback, UnlearningCost) and "cost/unlearn_time_s" not in final:
                final.update(callback.values(trainer, module))
        record = {"state": "complete", "metrics": final, "initial": initial}
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(result)


# ---------------------------------------------------------------------------------------------- evaluation setup
@dataclass(frozen=True)
class _Embedded:
    recipe: str
    scenario: str
    epochs: int | None
    cache_dir: str | None


def _embedded(config: Mapping[str, Any]) -> _Embedded | None:
    """The embedded recipe and benchmark scenario the config runs, if any (then the benchmark's fit is used)."""
    from lightning_unlearn.benchmark import SCENARIOS, _normal
    from lightning_unlearn.pretrained import RECIPES

    data_class = _get(config, "data.class_path")
    try:
        cls = import_class(str(data_class))
    except (ImportError, AttributeError, ValueError):
        return None
    recipe = next((name for name, r in RECIPES.items() if cls is r.datamodule), None)
    declared = _normal(_get(config, "data.init_args.scenario"))
    scenario = next((name for name, spec in SCENARIOS.items() if _normal(spec) == declared), None)
    if recipe is None or scenario is None:
        return None
    model_args = _get(config, "model.init_args.model.init_args", {}) or {}
    return _Embedded(recipe, scenario, model_args.get("epochs"), model_args.get("cache_dir"))


def _oracle_callback(config: Mapping[str, Any], oracle: str) -> dict[str, Any]:
    model = _get(config, "model.init_args.model", {}) or {}
    if not str(model.get("class_path", "")).endswith("load_classifier"):
        raise ValueError(
            "with --oracle the method's model must be a lightning_unlearn.models.load_classifier spec "
            "(its arch, num_classes, in_channels and input_size describe the oracle's network)"
        )
    args = model.get("init_args", {}) or {}
    size = args.get("input_size")
    return {
        "class_path": "lightning_unlearn.callbacks.RetrainComparison",
        "init_args": {
            "arch": args["arch"],
            "num_classes": args["num_classes"],
            "reference_ckpt": str(oracle),
            "in_channels": args.get("in_channels"),
            "input_size": size[0] if isinstance(size, list | tuple) else size,
            "log_initial": False,
        },
    }


class _Runner:
    """Turns a trial's user config into the config that is fitted (the benchmark's on embedded data)."""

    def __init__(
        self, base: dict[str, Any], objectives: Sequence[str], seed: int, oracle: str | None, out: Path
    ) -> None:
        from lightning_unlearn.benchmark import SCENARIOS, RunSpec, pretrain_job
        from lightning_unlearn.pretrained import pretrained_checkpoint

        self.base = base
        self.objectives = tuple(objectives)
        self.seed = seed
        self.oracle = oracle
        self.embedded = _embedded(base)
        self._spec_type = RunSpec
        needs_oracle = "gap_to_retrain" in objectives
        if self.embedded is not None and oracle is None:
            e = self.embedded
            scenario = import_class(SCENARIOS[e.scenario]["class_path"])(**SCENARIOS[e.scenario].get("init_args", {}))
            jobs = []
            for mode in ("pretrain", "retrain"):
                path = pretrained_checkpoint(
                    e.recipe,
                    mode,
                    scenario,
                    0,
                    None,
                    e.epochs,
                    e.cache_dir,
                    False,
                    train=False,  # type: ignore[arg-type]
                )
                if mode == "retrain":
                    self.oracle = str(path)
                args = (e.recipe, mode, e.scenario, e.cache_dir, e.epochs)
                jobs.append(Job(f"{mode}_{e.scenario}", path, pretrain_job, args, out / "logs" / f"{mode}.log"))
            run_jobs(jobs, workers=1, description="original and retrained models")
        elif needs_oracle and oracle is None:
            raise ValueError(
                "gap_to_retrain needs --oracle PATH (a retrained model's state dict) unless the config runs an "
                "embedded dataset on a benchmark scenario; or use --objective forget_quality"
            )

    def run_config(self, config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """The config fitted for one trial."""
        if self.embedded is not None and self.oracle is not None and _embedded(config) == self.embedded:
            from lightning_unlearn.benchmark import SCENARIOS, run_config

            e = self.embedded
            presets = run_dir / "presets"
            (presets / e.scenario).mkdir(parents=True, exist_ok=True)
            (presets / e.scenario / "trial.yaml").write_text(json.dumps(config))
            spec = self._spec_type("trial", e.scenario, self.seed, e.recipe, e.cache_dir, e.epochs, str(presets))
            original = {
                "recipe": e.recipe,
                "scenario": SCENARIOS[e.scenario],
                "epochs": e.epochs,
                "cache_dir": e.cache_dir,
                "progress": False,
            }
            fitted = run_config(spec, Path(self.oracle), original)
            for callback in fitted["trainer"]["callbacks"]:
                if callback["class_path"].endswith("ForgettingMetrics"):
                    callback["init_args"]["log_initial"] = True  # the original's accuracies (forget_quality)
            return fitted
        fitted = copy.deepcopy(config)
        callbacks: list[dict[str, Any]] = [
            {"class_path": "lightning_unlearn.callbacks.ForgettingMetrics", "init_args": {"log_initial": True}},
            {
                "class_path": "lightning_unlearn.callbacks.MembershipInference",
                "init_args": {"attacks": ["svc_confidence"], "log_initial": False},
            },
        ]
        if self.oracle is not None:
            callbacks.append(_oracle_callback(config, self.oracle))
        callbacks.append(
            {"class_path": "lightning_unlearn.callbacks.UnlearningCost", "init_args": {"reference_ckpt": self.oracle}}
        )
        trainer = fitted.setdefault("trainer", {})
        trainer.pop("logger", None)
        trainer.update({"check_val_every_n_epoch": _NEVER, "num_sanity_val_steps": 0, "callbacks": callbacks})
        fitted["seed_everything"] = self.seed
        if takes_seed(import_class(fitted["model"]["class_path"])):
            fitted["model"].setdefault("init_args", {})["seed"] = self.seed
        data_class = _get(fitted, "data.class_path")
        if data_class and "shuffle_seed" in inspect.signature(import_class(data_class)).parameters:
            fitted["data"].setdefault("init_args", {})["shuffle_seed"] = self.seed
        return fitted


# ---------------------------------------------------------------------------------------------- the tuner
@dataclass(frozen=True)
class TuneResult:
    """What a tuning run found.

    Attributes:
        best_values: The best trial's objective values (Pareto trial with the lowest first objective when several).
        best_params: Its sampled values (dotted config paths).
        best_config: ``best.yaml``.
        n_trials: Finished (complete or pruned) trials in the study.
        preset_values: The objective values of the config's own values (the study's first trial), if measured.
        pareto: Numbers of the trials on the Pareto front (multi-objective) or the best trial's number.
    """

    best_values: list[float]
    best_params: dict[str, Any]
    best_config: Path
    n_trials: int
    preset_values: list[float] | None
    pareto: list[int]


def parse_objectives(objective: str | Sequence[str]) -> list[str]:
    """``"gap_to_retrain,cost"`` -> ``["gap_to_retrain", "cost"]``.

    Raises:
        ValueError: On an unknown or repeated objective (the message names the allowed ones).
    """
    names = [n.strip() for n in objective.split(",")] if isinstance(objective, str) else list(objective)
    if not names or any(n not in OBJECTIVES for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"objective must be one or more distinct names of {OBJECTIVES}, comma-separated; got {objective!r}"
        )
    return names


def tune(
    configs: Sequence[str | Path],
    space: str | Path | Mapping[str, Any] | None = None,
    trials: int = 20,
    seed: int = 0,
    objective: str | Sequence[str] = "gap_to_retrain",
    out: str | Path = "tune",
    oracle: str | None = None,
    tolerance: float = 0.01,
    storage: str | None = None,
    study_name: str | None = None,
    n_jobs: int = 1,
    engine: str | None = None,
    ray_address: str | None = None,
    pruning: bool = True,
    command: str | None = None,
    console: Console | None = None,
) -> TuneResult:
    """Search the method's hyperparameters (or resume the search) and write ``best.yaml``, ``trials.csv``/``.md``.

    Args:
        configs: The method's config (a shipped name such as ``mnist5k/class_removal/ssd`` or a YAML file) and any
            further fragments (the user's model / datamodule), merged in order.
        space: A YAML file or mapping ``{dotted.config.path: {type, low, high, log, step, choices}}`` replacing the
            method's default space (:data:`lightning_unlearn.search_spaces.DEFAULT_SPACES`).
        trials: Finished trials wanted in the study (a resumed study only runs the missing ones).
        seed: The seed of every trial's fit and of the sampler.
        objective: One of :data:`OBJECTIVES` or several, comma-separated (multi-objective: NSGA-II, Pareto front).
        out: Output folder.
        oracle: The retrained model's state dict for ``gap_to_retrain`` (default on embedded data: the benchmark's
            cached oracle).
        tolerance: Accuracy drop (fraction) of retain / test accuracy without penalty in ``forget_quality``.
        storage: Optuna storage URL (default ``sqlite:///<out>/study.db``); share one to run several tuners.
        study_name: Study name in the storage (default ``tune``).
        n_jobs: Trials run in parallel (processes, or Ray tasks with ``engine="ray"``).
        engine: ``"local"`` or ``"ray"`` (see :func:`lightning_unlearn.jobs.run_jobs`).
        ray_address: Ray cluster address with the Ray engine.
        pruning: Stop hopeless multi-epoch trials early (single objective only).
        command: The command line recorded in ``best.yaml`` (default: this process's).
        console: Console of the progress bar and messages.

    Raises:
        ValueError: On invalid arguments, spaces or configs.
        ImportError: Without Optuna (or Ray with ``engine="ray"``).
    """
    optuna = _import_optuna()
    with warnings.catch_warnings():
        # ask/tell with heartbeats (kept alive by this tuner) and the stale-trial check are intended here
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _tune(
            optuna,
            configs,
            space,
            trials,
            seed,
            objective,
            Path(out),
            oracle,
            tolerance,
            storage,
            study_name,
            n_jobs,
            engine,
            ray_address,
            pruning,
            command,
            console or Console(stderr=True),
        )


def _tune(
    optuna: Any,
    configs: Sequence[str | Path],
    space: str | Path | Mapping[str, Any] | None,
    trials: int,
    seed: int,
    objective: str | Sequence[str],
    out: Path,
    oracle: str | None,
    tolerance: float,
    storage: str | None,
    study_name: str | None,
    n_jobs: int,
    engine: str | None,
    ray_address: str | None,
    pruning: bool,
    command: str | None,
    console: Console,
) -> TuneResult:
    from lightning_unlearn.methods.base import check_integer

    check_integer("trials", trials, minimum=1)
    check_integer("n_jobs", n_jobs, minimum=1)
    check_integer("seed", seed, minimum=0)
    check_fraction("tolerance", tolerance, include_low=True, what="an accuracy fraction")
    objectives = parse_objectives(objective)
    base = load_config(configs)
    method = str(base["model"]["class_path"])
    if space is None:
        method_space = default_space(method)
    else:
        params = load_space(space) if isinstance(space, str | Path) else parse_space(space)
        method_space = MethodSpace(params, default_space(method).stage_epochs if _has_space(method) else {})
    out.mkdir(parents=True, exist_ok=True)
    runner = _Runner(base, objectives, seed, oracle, out)

    own_storage = storage is None
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or "tune"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = len(objectives) > 1
    sampler = optuna.samplers.NSGAIISampler(seed=seed) if multi else optuna.samplers.TPESampler(seed=seed)
    use_pruner = pruning and not multi
    pruner_args = {"n_startup_trials": 4, "n_warmup_steps": 0}
    pruner = optuna.pruners.MedianPruner(**pruner_args) if use_pruner else optuna.pruners.NopPruner()
    rdb = url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "oracle", "mssql")
    study_storage: Any = url
    if rdb:
        retry: dict[str, Any] = (
            {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")  # Optuna >= 4.9
            else {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        )
        study_storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=_HEARTBEAT_S, grace_period=4 * _HEARTBEAT_S, **retry
        )
    study = optuna.create_study(
        storage=study_storage,
        study_name=name,
        directions=["minimize"] * len(objectives),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.user_attrs.get("objectives")
    if stored is not None and list(stored) != objectives:
        raise ValueError(f"study {name!r} in {url} optimises {stored}, not {objectives}; give another --study-name")
    study.set_user_attr("objectives", objectives)
    _recover(study, optuna, own_storage)
    if not study.trials:  # the config's own values first: the baseline every search is measured against
        current = {p: _get(base, p) for p in method_space.params}
        if all(v is not None for v in current.values()):
            study.enqueue_trial(current, user_attrs={"preset": True})

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, trials - done)
    console.print(
        f"Tuning {method.rsplit('.', 1)[-1]} on {', '.join(objectives)}: {done} trial(s) done, {remaining} to run, "
        f"{n_jobs} in parallel; study {name!r} in {url}"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(_best_text(study, multi), total=trials, completed=min(done, trials))
        while remaining > 0:
            if rdb:
                optuna.storages.fail_stale_trials(study)
            batch = [study.ask() for _ in range(min(n_jobs, remaining))]
            jobs = []
            for trial in batch:
                values = {path: param.suggest(trial, path) for path, param in method_space.params.items()}
                run_dir = out / "trials" / f"trial_{trial.number:04d}"
                fitted = runner.run_config(apply_values(base, values, method_space), run_dir)
                epochs = _get(fitted, "trainer.max_epochs")  # None: the method's own budget, usually several epochs
                prune = (
                    {
                        "storage": url,
                        "study_name": name,
                        "trial_id": trial._trial_id,
                        "tolerance": tolerance,
                        "pruner_args": pruner_args,
                    }
                    if use_pruner and (epochs is None or int(epochs) > 1)
                    else None
                )
                jobs.append(
                    Job(
                        f"trial {trial.number}",
                        run_dir / "result.json",
                        trial_job,
                        (fitted, prune, run_dir / "result.json", run_dir),
                    )
                )
            with _heartbeat(study_storage if rdb else None, [t._trial_id for t in batch]):
                try:
                    run_jobs(jobs, workers=n_jobs, engine=engine, ray_address=ray_address, progress=False)
                except JobError as error:
                    console.print(f"[yellow]{str(error).splitlines()[0]}[/yellow]")
            for trial, job in zip(batch, jobs, strict=True):
                _tell(study, trial, job, objectives, tolerance, optuna, console)
                progress.update(task, advance=1, description=_best_text(study, multi))
            remaining -= len(batch)
            if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                _write_outputs(study, base, method_space, objectives, out, command)  # up to date while it runs
    result = _write_outputs(study, base, method_space, objectives, out, command)
    best = ", ".join(f"{o} {v:.3f}" for o, v in zip(objectives, result.best_values, strict=True))
    console.print(f"Best: {best}; best.yaml, trials.csv and trials.md in [bold]{out}[/bold]")
    return result


def _has_space(method: str) -> bool:
    try:
        default_space(method)
    except ValueError:
        return False
    return True


def _recover(study: Any, optuna: Any, own_storage: bool) -> None:
    """Mark trials left running by a killed tuner failed and retry them with the same values.

    With the tuner's own storage nothing else can be running them; with a shared storage only trials whose
    heartbeat stopped are (Optuna's stale-trial check, done before each batch).
    """
    if not own_storage:
        return
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number})


@contextmanager
def _heartbeat(storage: Any, trial_ids: Sequence[int]) -> Iterator[None]:
    """Record the running trials' heartbeats (RDB storage) so another tuner sharing the study sees them alive."""
    if storage is None or not getattr(storage, "is_heartbeat_enabled", lambda: False)():
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)
            stop.wait(_HEARTBEAT_S)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _tell(
    study: Any, trial: Any, job: Job, objectives: Sequence[str], tolerance: float, optuna: Any, console: Console
) -> None:
    state = optuna.trial.TrialState
    if not job.result.exists():
        study.tell(trial, state=state.FAIL)
        return
    record = json.loads(job.result.read_text())
    if record["state"] == "pruned":
        study.tell(trial, state=state.PRUNED)
        return
    try:
        values = objective_values(objectives, record["metrics"], record.get("initial", {}), tolerance)
    except KeyError as error:
        console.print(f"[yellow]trial {trial.number}: metric {error} missing; marked failed[/yellow]")
        study.tell(trial, state=state.FAIL)
        return
    if not all(math.isfinite(v) for v in values):
        study.tell(trial, state=state.FAIL)
        return
    for key in ("acc/forget", "acc/retain", "acc/test", "acc/test_retain", "mia/svc_confidence_efficacy", "gap/avg"):
        if key in record["metrics"]:
            trial.set_user_attr(key, record["metrics"][key])
    study.tell(trial, values if len(values) > 1 else values[0])


def _best_text(study: Any, multi: bool) -> str:
    try:
        if multi:
            return f"trials (Pareto front: {len(study.best_trials)})"
        return f"trials (best {study.best_value:.2f})"
    except ValueError:  # no completed trial yet
        return "trials"


# ---------------------------------------------------------------------------------------------- outputs
def _write_outputs(
    study: Any,
    base: Mapping[str, Any],
    space: MethodSpace,
    objectives: Sequence[str],
    out: Path,
    command: str | None,
) -> TuneResult:
    optuna = _import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"no trial completed; see the logs under {out / 'trials'}")
    front = sorted(study.best_trials, key=lambda t: (t.values[0], t.number))
    best = front[0]
    pareto = [t.number for t in front]
    preset = next((t for t in complete if t.user_attrs.get("preset")), None)
    finished = len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    )
    params = list(space.params)
    metric_keys = ["acc/forget", "acc/retain", "acc/test_retain", "acc/test", "mia/svc_confidence_efficacy"]

    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower()}
        for i, name in enumerate(objectives):
            complete = t.state == optuna.trial.TrialState.COMPLETE  # a pruned trial's value is the proxy's
            row[name] = f"{t.values[i]:.4f}" if complete and t.values is not None else ""
        row.update({p: t.params.get(p, "") for p in params})
        row.update({k: "" if k not in t.user_attrs else f"{100 * t.user_attrs[k]:.2f}" for k in metric_keys})
        row["preset"] = bool(t.user_attrs.get("preset"))
        row["pareto"] = t.number in pareto
        rows.append(row)
    with open(out / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = [
        "trial",
        "state",
        *objectives,
        *[p.rsplit(".", 1)[-1] for p in params],
        "forget acc (%)",
        "retain acc (%)",
    ]
    lines = [f"# Tuning {base['model']['class_path'].rsplit('.', 1)[-1]}: {', '.join(objectives)} (minimised)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        mark = " (preset)" if row["preset"] else " (best)" if row["number"] == best.number else ""
        cells = [f"{row['number']}{mark}", row["state"], *[row[o] for o in objectives]]
        cells += [_fmt(row[p]) for p in params] + [row["acc/forget"], row["acc/retain"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(objectives) > 1:
        lines += [
            "",
            "## Pareto front",
            "",
            "| trial | " + " | ".join(objectives) + " |",
            "|" + "---|" * (len(objectives) + 1),
        ]
        lines += [f"| {t.number} | " + " | ".join(f"{v:.4f}" for v in t.values) + " |" for t in front]
    (out / "trials.md").write_text("\n".join(lines) + "\n")

    best_config = apply_values(base, {p: best.params[p] for p in params if p in best.params}, space)
    command = command or " ".join(shlex.quote(a) for a in ["lightning-unlearn-tune", *sys.argv[1:]])
    values = ", ".join(f"{o} {v:.3f}" for o, v in zip(objectives, best.values, strict=True))
    comment = [
        f"Tuned by lightning-unlearn-tune: {values} (trial {best.number} of {finished} finished trials, minimised).",
        f"Values: {', '.join(f'{p} = {_fmt(best.params[p])}' for p in params if p in best.params)}.",
    ]
    if preset is not None:
        comment.append(
            "The config's own values: "
            + ", ".join(f"{o} {v:.3f}" for o, v in zip(objectives, preset.values, strict=True))
            + "."
        )
    comment.append(f"Command: {command}")
    text = "".join(f"# {line}\n" for line in comment) + yaml.safe_dump(best_config, sort_keys=False)
    (out / "best.yaml").write_text(text)
    return TuneResult(
        best_values=list(best.values),
        best_params={p: best.params[p] for p in params if p in best.params},
        best_config=out / "best.yaml",
        n_trials=finished,
        preset_values=None if preset is None else list(preset.values),
        pareto=pareto,
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-unlearn-tune`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn-tune",
        description="Search an unlearning method's hyperparameters with Optuna (resumable; best.yaml is runnable).",
    )
    parser.add_argument(
        "--config", action="append", required=True, help="method config (shipped name or YAML); repeatable"
    )
    parser.add_argument(
        "--space", default=None, help="YAML search space {dotted.path: {type, low, high, log}} (default: the method's)"
    )
    parser.add_argument("--trials", type=int, default=20, help="finished trials wanted in the study (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every trial and of the sampler (default 0)")
    parser.add_argument(
        "--objective", default="gap_to_retrain", help=f"one or more of {', '.join(OBJECTIVES)}, comma-separated"
    )
    parser.add_argument("--oracle", default=None, help="retrained model state dict (default on embedded data: cached)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="accuracy drop without penalty (forget_quality)")
    parser.add_argument("--out", default=None, help="output folder (default tune/<config name>)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<out>/study.db)")
    parser.add_argument("--study-name", default=None, help="study name in the storage (default tune)")
    parser.add_argument("--n-jobs", type=int, default=1, help="trials in parallel (default 1)")
    add_ray_address_argument(parser, "the trials")
    parser.add_argument("--no-pruning", action="store_true", help="never stop a trial early")
    return parser


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-unlearn-tune``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if args is None else args)
    ns = parser.parse_args(argv)
    out = ns.out or str(Path("tune") / Path(ns.config[0]).with_suffix("").as_posix().replace("/", "_"))
    engine = None if ns.ray_address is None else "ray"
    address = None if ns.ray_address in (None, "local") else ns.ray_address
    try:
        tune(
            ns.config,
            space=ns.space,
            trials=ns.trials,
            seed=ns.seed,
            objective=ns.objective,
            out=out,
            oracle=ns.oracle,
            tolerance=ns.tolerance,
            storage=ns.storage,
            study_name=ns.study_name,
            n_jobs=ns.n_jobs,
            engine=engine,
            ray_address=address,
            pruning=not ns.no_pruning,
            command=" ".join(shlex.quote(a) for a in ["lightning-unlearn-tune", *argv]),
        )
    except (ValueError, ImportError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
