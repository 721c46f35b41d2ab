"""``lightning-unlearn-benchmark``: every method on every scenario against the retrain oracle, with tables and plots.

For each scenario the original classifier and the retrain oracle of the embedded dataset are trained once and
cached (:func:`~lightning_unlearn.pretrained.pretrained_checkpoint`). Each (method, scenario, seed) run is a
``lightning-unlearn fit`` of a generated config (saved as ``runs/<method>/<scenario>/seed<k>/benchmark.yaml``),
starting from the original, with the seed varying the method's randomness and the training shuffles (the split is
fixed). After the run the unlearned model is evaluated once: accuracy per split, the membership-inference attacks
and the comparison with the oracle (``gap/*``, ``dist/*``); its cost comes from ``UnlearningCost``.

Outputs in ``--out``: ``results.csv`` (one row per method x scenario x seed), ``results.md`` (mean ± std per method x
scenario, with the oracle's row), ``forget_vs_test.png`` (forget vs test accuracy per method, the oracle marked),
``cost_vs_gap.png`` (time relative to retraining vs average gap) and ``runs/`` (configs, checkpoints, one result file
per run: an interrupted benchmark resumes where it stopped).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from lightning_unlearn.jobs import (
    Job,
    add_ray_address_argument,
    cli_fit,
    default_workers,
    import_class,
    run_jobs,
    takes_seed,
)
from lightning_unlearn.presets import CONFIG_ROOT
from lightning_unlearn.problem import (
    UserProblem,
    add_problem_arguments,
    compose,
    compose_oracle,
    load_spec,
    preset_scenario,
)
from lightning_unlearn.validation import check_integer

__all__ = ["BENCHMARK_SETTINGS", "PRESETS", "SCENARIOS", "load_preset", "main", "preset_methods", "run_benchmark"]

_DM = "lightning_unlearn.datamodules"
_M = "lightning_unlearn.methods"


#: The benchmark's presets: ``<CONFIG_ROOT>/mnist5k/<scenario>/<method>.yaml``, one shipped config per method and
#: scenario.
PRESETS = CONFIG_ROOT / "mnist5k"

#: Display order of the methods in tables and plots (methods not listed follow in alphabetical order).
DISPLAY_ORDER = (
    "finetune",
    "gradient_ascent",
    "neggrad_plus",
    "random_label",
    "l1_sparse",
    "salun",
    "scrub",
    "bad_teaching",
    "unsir",
    "boundary_shrink",
    "boundary_expanding",
    "ssd",
    "lfssd",
    "jit",
    "laf",
    "laf_r",
    "l2ul",
    "poison",
    "poison_full",
    "hybrid",
    "pruning",
    "pruning_last",
    "pruning_complex",
    "activation_reset",
)

#: What the benchmark sets in a preset (everything else of the shipped file is run as it is).
BENCHMARK_SETTINGS = (
    "seed_everything",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.check_val_every_n_epoch",
    "trainer.num_sanity_val_steps",
    "model.init_args.model",
    "model.init_args.seed",
    "data.init_args.shuffle_seed",
)


def preset_path(method: str, scenario: str, presets: str | Path | None = None) -> Path:
    """The shipped config (or, with ``presets``, the user's file) that the benchmark runs for a method x scenario."""
    return Path(presets or PRESETS) / scenario / f"{method}.yaml"


def preset_methods(scenarios: Sequence[str] | None = None, presets: str | Path | None = None) -> list[str]:
    """Methods with a preset on at least one of ``scenarios`` (default: every scenario), in display order."""
    root = Path(presets or PRESETS)
    names = {p.stem for scenario in (scenarios or SCENARIOS) for p in (root / scenario).glob("*.yaml")}
    known = [m for m in DISPLAY_ORDER if m in names]
    return known + sorted(names - set(known))


def load_preset(method: str, scenario: str, presets: str | Path | None = None) -> dict[str, Any]:
    """The preset's config as a dict, checked to run ``scenario`` (the scenario its folder names).

    Raises:
        ValueError: If no preset exists, or its datamodule's scenario is not the benchmark's ``scenario``.
    """
    path = preset_path(method, scenario, presets)
    if not path.is_file():
        raise ValueError(f"no preset for {method!r} on {scenario!r} (looked for {path})")
    config = yaml.safe_load(path.read_text())
    declared = (config.get("data") or {}).get("init_args", {}).get("scenario")
    if _normal(declared) != _normal(SCENARIOS[scenario]):
        raise ValueError(
            f"{path} runs the scenario {declared!r}, not the benchmark's {scenario!r}: {SCENARIOS[scenario]}"
        )
    return config


def _normal(spec: Any) -> Any:
    """A scenario spec with an absent ``init_args`` read as empty (``{class_path: X}`` equals ``init_args: {}``)."""
    if isinstance(spec, Mapping):
        return {"class_path": spec.get("class_path"), "init_args": dict(spec.get("init_args") or {})}
    return spec


#: Benchmark scenarios (the issue's defaults).
SCENARIOS: dict[str, dict[str, Any]] = {
    "class_removal": {"class_path": f"{_DM}.ClassRemoval", "init_args": {"classes": [0]}},
    "random_10pct": {"class_path": f"{_DM}.RandomRemoval", "init_args": {"fraction": 0.1}},
    "k16": {"class_path": f"{_DM}.KInstances", "init_args": {"k": 16}},
    "noisy_labels": {"class_path": f"{_DM}.NoisyLabels", "init_args": {}},
}

#: Attacks run on every unlearned model.
ATTACKS = ("entropy", "svc_confidence", "loss_lr_cv", "forget_vs_test")
_NEVER = 1_000_000  # check_val_every_n_epoch: no validation during the run, one evaluation after it


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run (picklable)."""

    method: str
    scenario: str
    seed: int
    recipe: str
    cache_dir: str | None
    recipe_epochs: int | None
    presets: str | None = None
    problem: UserProblem | None = None


# ---------------------------------------------------------------------------------------------- configs
def _scenario_object(scenario: str) -> Any:
    spec = SCENARIOS[scenario]
    return import_class(spec["class_path"])(**spec.get("init_args", {}))


def run_config(spec: RunSpec, oracle: Path, original_args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lightning-unlearn fit`` config of one run: the preset file with only :data:`BENCHMARK_SETTINGS` set.

    The benchmark sets the seed (``seed_everything``, the method's ``seed`` when it takes one, the datamodule's
    ``shuffle_seed``), the cached original classifier, CPU on one device, no logger and no validation during the run,
    and its own evaluation callbacks. On another recipe than the presets' (``digits8x8``), the datamodule class is
    that recipe's too. Every other value (method arguments, epochs, stages, batch size, ...) is the preset's.
    """
    from lightning_unlearn.pretrained import RECIPES

    config = load_preset(spec.method, spec.scenario, spec.presets)
    if spec.problem is not None:
        return _user_run_config(config, spec, spec.problem, oracle)
    recipe = RECIPES[spec.recipe]
    datamodule = recipe.datamodule()
    channels, height, width = datamodule.input_shape
    model = config["model"]
    init_args = model.setdefault("init_args", {})
    init_args["model"] = {
        "class_path": "lightning_unlearn.pretrained.pretrained_classifier",
        "init_args": dict(original_args),
    }
    if takes_seed(import_class(model["class_path"])):
        init_args["seed"] = spec.seed
    callbacks = [
        *_metric_callbacks(),
        {
            "class_path": "lightning_unlearn.callbacks.RetrainComparison",
            "init_args": {
                "arch": recipe.arch,
                "num_classes": datamodule.num_classes,
                "reference_ckpt": str(oracle),
                "in_channels": int(channels),
                "input_size": int(height) if height == width else None,
                "log_initial": False,
            },
        },
        {"class_path": "lightning_unlearn.callbacks.UnlearningCost", "init_args": {"reference_ckpt": str(oracle)}},
    ]
    _set_run_settings(config, spec.seed, callbacks)
    if spec.recipe != PRESETS.name:  # the presets' settings on another embedded dataset
        config["data"]["class_path"] = f"{recipe.datamodule.__module__}.{recipe.datamodule.__name__}"
    return config


def _set_run_settings(config: dict[str, Any], seed: int, callbacks: list[dict[str, Any]]) -> None:
    """Set what every benchmark run sets in its preset (see :data:`BENCHMARK_SETTINGS`).

    The seed, CPU on one device, no logger, no validation during the run (one evaluation after it) and the
    benchmark's evaluation callbacks.
    """
    trainer = config.setdefault("trainer", {})
    trainer.pop("logger", None)
    trainer.update(
        {
            "accelerator": "cpu",
            "devices": 1,
            "check_val_every_n_epoch": _NEVER,
            "num_sanity_val_steps": 0,
            "callbacks": callbacks,
        }
    )
    config["seed_everything"] = seed
    config["data"].setdefault("init_args", {})["shuffle_seed"] = seed


def _user_run_config(config: dict[str, Any], spec: RunSpec, problem: UserProblem, oracle: Path) -> dict[str, Any]:
    """A preset on the user's classifier and data (:func:`~lightning_unlearn.problem.compose`), same settings."""
    from lightning_unlearn.callbacks.cost import read_reference_time

    config = compose(config, problem.classifier, problem.data_for(spec.scenario))
    if takes_seed(import_class(config["model"]["class_path"])):
        config["model"]["init_args"]["seed"] = spec.seed
    cost: dict[str, Any] = {"class_path": "lightning_unlearn.callbacks.UnlearningCost"}
    try:  # the time ratio when the oracle's run time is recorded beside it (an --oracle-config oracle)
        read_reference_time(oracle)
        cost["init_args"] = {"reference_ckpt": str(oracle)}
    except (FileNotFoundError, ValueError):
        pass
    callbacks = [
        *_metric_callbacks(),
        {
            "class_path": "lightning_unlearn.callbacks.RetrainComparison",
            "init_args": {"reference_model": problem.classifier, "reference_ckpt": str(oracle), "log_initial": False},
        },
        cost,
    ]
    _set_run_settings(config, spec.seed, callbacks)
    return config


def _metric_callbacks() -> list[dict[str, Any]]:
    """The accuracy and membership-inference callbacks of every benchmark run (final evaluation only)."""
    return [
        {"class_path": "lightning_unlearn.callbacks.ForgettingMetrics", "init_args": {"log_initial": False}},
        {
            "class_path": "lightning_unlearn.callbacks.MembershipInference",
            "init_args": {"attacks": list(ATTACKS), "log_initial": False},
        },
    ]


def oracle_job(problem: UserProblem, scenario: str, run_dir: Path) -> None:
    """Train the user's retrain oracle of ``scenario`` once (``run_dir/classifier.pt``, its time in cost.json)."""
    source = yaml.safe_load(Path(str(problem.oracle_config)).read_text()) or {}
    config = compose_oracle(source, problem.classifier, problem.data_for(scenario))
    trainer = config.setdefault("trainer", {})
    trainer.pop("logger", None)
    trainer["callbacks"] = []
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "oracle.yaml"
    path.write_text(json.dumps(config, indent=2))
    cli_fit([str(path)], [], run_dir)


# ---------------------------------------------------------------------------------------------- one run (worker)
def benchmark_job(spec: RunSpec, oracle: str, original_args: dict[str, Any], result: Path, run_dir: Path) -> None:
    """Run one method on one scenario with one seed and write its metrics to ``result`` (JSON)."""
    from lightning_unlearn.callbacks import SplitMetricsCallback, UnlearningCost, evaluate_together
    from lightning_unlearn.callbacks.retrain_comparison import RetrainComparison

    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "benchmark.yaml"
    config_path.write_text(json.dumps(run_config(spec, Path(oracle), original_args), indent=2))
    start = time.perf_counter()
    cli = cli_fit([str(config_path)], [], run_dir)
    wall = time.perf_counter() - start
    trainer, module = cli.trainer, cli.model
    metrics: dict[str, float] = {}
    reference: dict[str, float] = {}
    evaluated = [callback for callback in trainer.callbacks if isinstance(callback, SplitMetricsCallback)]
    # the callbacks evaluated the final model when training ended; any that did not share one pass now
    missing = [callback for callback in evaluated if not callback.final_metrics]
    for callback, values in zip(missing, evaluate_together(missing, trainer, module), strict=True):
        callback.final_metrics = values
    for callback in evaluated:
        metrics.update(callback.final_metrics)
    for callback in trainer.callbacks:
        if isinstance(callback, RetrainComparison):
            reference = dict(callback.reference_metrics)
        if isinstance(callback, UnlearningCost):
            metrics.update(callback.values(trainer, module))
    record = {
        "method": spec.method,
        "scenario": spec.scenario,
        "seed": spec.seed,
        "wall_s": wall,
        "metrics": metrics,
        "reference": reference,
    }
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(result)


def pretrain_job(recipe: str, mode: str, scenario: str, cache_dir: str | None, epochs: int | None) -> None:
    """Train (or find) the cached original / oracle of a scenario."""
    from lightning_unlearn.pretrained import pretrained_checkpoint

    pretrained_checkpoint(recipe, mode, _scenario_object(scenario), 0, None, epochs, cache_dir, False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- the benchmark
def run_benchmark(
    methods: Sequence[str] | None = None,
    scenarios: Sequence[str] | None = None,
    seeds: int = 2,
    workers: int | None = None,
    out: str | Path = "benchmark",
    recipe: str = "mnist5k",
    cache_dir: str | None = None,
    recipe_epochs: int | None = None,
    console: Console | None = None,
    presets: str | Path | None = None,
    problem: UserProblem | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark and write its outputs; returns the per-run records.

    Each method runs on the scenarios it has a preset for (``<presets>/<scenario>/<method>.yaml``; default the
    shipped :data:`PRESETS`); a named method without a preset on a chosen scenario is reported and skipped.

    With ``problem`` the presets run on the user's classifier and data instead of the embedded dataset
    (:mod:`lightning_unlearn.problem`): its scenarios are the runs' (``scenarios`` is ignored), its oracle is the
    given checkpoint or is trained once per scenario from its ``oracle_config`` (cached under
    ``<out>/oracles/``), and ``recipe`` / ``recipe_epochs`` are unused.

    Raises:
        ValueError: On an unknown method, scenario or recipe, or ``seeds < 1``.
    """
    from lightning_unlearn.pretrained import RECIPES, pretrained_checkpoint

    console = console or Console()
    if problem is not None:
        scenarios = list(problem.scenarios)
    scenarios = list(scenarios) if scenarios else list(SCENARIOS)
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose from {tuple(SCENARIOS)}")
    known = preset_methods(None, presets)
    for name in methods or []:
        if name not in known:
            raise ValueError(f"unknown method {name!r}; choose from {tuple(known)}")
    methods = list(methods) if methods else preset_methods(scenarios, presets)
    presets_arg = None if presets is None else str(presets)
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    check_integer("seeds", seeds, 1)
    out = Path(out)
    n_workers = workers if workers is not None else default_workers()

    # 1. originals and oracles, once per scenario (cached across benchmarks)
    models: dict[tuple[str, str], Path] = {}
    pre_jobs: list[Job] = []
    for scenario in scenarios if problem is None else ():
        for mode in ("pretrain", "retrain"):
            path = pretrained_checkpoint(
                recipe, mode, _scenario_object(scenario), 0, None, recipe_epochs, cache_dir, False, train=False
            )
            models[(scenario, mode)] = path
            if not any(job.result == path for job in pre_jobs):
                pre_jobs.append(
                    Job(
                        f"{mode}_{scenario}",
                        path,
                        pretrain_job,
                        (recipe, mode, scenario, cache_dir, recipe_epochs),
                        out / "logs" / f"{mode}_{scenario}.log",
                    )
                )
    for scenario in scenarios:
        if problem is None:
            break
        if problem.oracle is not None:
            models[(scenario, "retrain")] = Path(problem.oracle)
            continue
        run_dir = out / "oracles" / f"{scenario}-{problem.oracle_key(scenario)}"
        models[(scenario, "retrain")] = run_dir / "classifier.pt"
        pre_jobs.append(
            Job(f"oracle_{scenario}", run_dir / "classifier.pt", oracle_job, (problem, scenario, run_dir), None)
        )
    console.print(
        f"Benchmark: {len(methods)} methods x {len(scenarios)} scenarios x {seeds} seeds on "
        f"{recipe if problem is None else problem.name}, "
        f"{n_workers} worker(s); results in {out}"
    )
    run_jobs(pre_jobs, workers=n_workers, description="original and retrained models", console=console)

    # 2. the runs
    jobs = []
    skipped = [f"{m} on {sc}" for sc in scenarios for m in methods if not preset_path(m, sc, presets).is_file()]
    if skipped:
        console.print(f"Not run (no preset for the scenario): {', '.join(skipped)}")
    for scenario in scenarios:
        original_args = {
            "recipe": recipe,
            "scenario": SCENARIOS[scenario],
            "epochs": recipe_epochs,
            "cache_dir": cache_dir,
            "progress": False,
        }
        for method in methods:
            if not preset_path(method, scenario, presets).is_file():
                continue
            for seed in range(seeds):
                spec = RunSpec(method, scenario, seed, recipe, cache_dir, recipe_epochs, presets_arg, problem)
                run_dir = out / "runs" / method / scenario / f"seed{seed}"
                jobs.append(
                    Job(
                        f"{method}/{scenario}/seed{seed}",
                        run_dir / "result.json",
                        benchmark_job,
                        (spec, str(models[(scenario, "retrain")]), original_args, run_dir / "result.json", run_dir),
                    )
                )
    paths = run_jobs(jobs, workers=n_workers, description="unlearning runs", console=console)
    records = [json.loads(p.read_text()) for p in paths]
    write_reports(records, out, console)
    return records


# ---------------------------------------------------------------------------------------------- reports
#: Columns of ``results.csv`` after method, scenario, seed (metric name -> column).
CSV_COLUMNS: dict[str, str] = {
    "acc/forget": "acc_forget",
    "acc/retain": "acc_retain",
    "acc/test": "acc_test",
    "acc/test_retain": "acc_test_retain",
    "mia/entropy_forget_member_rate": "mia_entropy_forget_member_rate",
    "mia/svc_confidence_efficacy": "mia_svc_confidence_efficacy",
    "mia/loss_lr_cv_acc": "mia_loss_lr_cv_acc",
    "mia/forget_vs_test_cv_acc": "mia_forget_vs_test_cv_acc",
    "gap/acc_forget": "gap_acc_forget",
    "gap/acc_retain": "gap_acc_retain",
    "gap/acc_test": "gap_acc_test",
    "gap/mia_svc_confidence_efficacy": "gap_mia_svc_confidence_efficacy",
    "gap/avg": "gap_avg",
    "dist/activation_l2": "dist_activation_l2",
    "dist/js": "dist_js",
    "dist/zrf": "dist_zrf",
    "cost/unlearn_time_s": "unlearn_s",
    "cost/optimizer_steps": "optimizer_steps",
    "cost/time_ratio": "time_ratio",
}


def write_reports(records: Sequence[dict[str, Any]], out: Path, console: Console | None = None) -> None:
    """``results.csv``, ``results.md``, the two plots and the terminal table."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "scenario", "seed", *CSV_COLUMNS.values(), "wall_s"])
        for r in records:
            row = [r["method"], r["scenario"], r["seed"]]
            row += [_fmt_csv(r["metrics"].get(name)) for name in CSV_COLUMNS]
            writer.writerow([*row, f"{r['wall_s']:.3f}"])
    groups = _group(records)
    (out / "results.md").write_text(_markdown(groups))
    _plots(groups, out)
    if console is not None:
        console.print(_table(groups))
        console.print(f"results.csv, results.md, forget_vs_test.png and cost_vs_gap.png in [bold]{out}[/bold]")


def _fmt_csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _group(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        groups.setdefault(r["scenario"], {}).setdefault(r["method"], []).append(r)
    return groups


def _values(runs: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    values = [r["metrics"].get(name) for r in runs]
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def _test_name(runs: Sequence[dict[str, Any]]) -> str:
    return "acc/test_retain" if "acc/test_retain" in runs[0]["metrics"] else "acc/test"


def _mean_std(values: np.ndarray, scale: float = 100.0, digits: int = 1) -> str:
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    return f"{values.mean() * scale:.{digits}f} ± {values.std(ddof=1) * scale:.{digits}f}"


def _markdown(groups: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> str:
    lines = []
    for scenario, by_method in groups.items():
        first = next(iter(by_method.values()))
        test = _test_name(first)
        reference = first[0]["reference"]
        other = " (other classes)" if test.endswith("retain") else ""
        lines += [
            f"### {scenario}",
            "",
            f"| method | forget acc (%) | retain acc (%) | test acc (%){other} | MIA efficacy (%) "
            "| avg gap to retrain (pp) | optimiser steps | unlearn time / retrain time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        svc = reference.get("mia/svc_confidence_efficacy")
        lines.append(
            f"| retrain (oracle) | {_pct(reference.get('acc/forget'))} | {_pct(reference.get('acc/retain'))} | "
            f"{_pct(reference.get(test))} | {_pct(svc)} | 0 | - | 1 |"
        )
        for method, runs in by_method.items():
            steps = _values(runs, "cost/optimizer_steps")
            lines.append(
                f"| {method} | {_mean_std(_values(runs, 'acc/forget'))} | {_mean_std(_values(runs, 'acc/retain'))} | "
                f"{_mean_std(_values(runs, test))} | {_mean_std(_values(runs, 'mia/svc_confidence_efficacy'))} | "
                f"{_mean_std(_values(runs, 'gap/avg'))} | {f'{steps.mean():.0f}' if len(steps) else '-'} | "
                f"{_mean_std(_values(runs, 'cost/time_ratio'), 1.0, 3)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(groups: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> Table:
    scenarios = list(groups)
    table = Table(title="Average gap to the retrained model (pp, lower is better) | time / retrain time")
    table.add_column("method")
    for scenario in scenarios:
        table.add_column(scenario, justify="right")
    methods = list(dict.fromkeys(m for by_method in groups.values() for m in by_method))
    for method in methods:
        cells = []
        for scenario in scenarios:
            runs = groups[scenario].get(method)
            if not runs:
                cells.append("-")
                continue
            gap = _values(runs, "gap/avg")
            ratio = _values(runs, "cost/time_ratio")
            cells.append(f"{100 * gap.mean():.1f} | {ratio.mean():.2f}" if len(gap) and len(ratio) else "-")
        table.add_row(method, *cells)
    return table


#: Text offsets (points) of the method labels, cycled through so that close points' labels do not overlap.
_LABEL_OFFSETS = ((5, 5), (5, -11), (-10, 8), (5, 14), (-10, -14))


def _plots(groups: Mapping[str, Mapping[str, list[dict[str, Any]]]], out: Path) -> None:
    """``forget_vs_test.png`` and ``cost_vs_gap.png``: one panel per scenario, points labelled, the oracle marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(groups)
    methods = list(dict.fromkeys(m for by_method in groups.values() for m in by_method))
    colours = plt.get_cmap("tab20")
    markers = "osD^v<>pPX*h"
    style = {m: (colours(i % 20), markers[i % len(markers)]) for i, m in enumerate(methods)}
    columns = min(2, len(scenarios))
    rows = math.ceil(len(scenarios) / columns)
    for kind in ("forget_vs_test", "cost_vs_gap"):
        fig, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, 6 * rows), squeeze=False)
        for ax, scenario in zip(axes.flat, scenarios, strict=False):
            by_method = groups[scenario]
            first = next(iter(by_method.values()))
            test = _test_name(first)
            reference = first[0]["reference"]
            for method in methods:
                runs = by_method.get(method)
                if not runs:
                    continue
                if kind == "forget_vs_test":
                    x, y = _values(runs, "acc/forget") * 100, _values(runs, test) * 100
                else:
                    x, y = _values(runs, "cost/time_ratio"), _values(runs, "gap/avg") * 100
                if len(x) and len(y):
                    colour, marker = style[method]
                    ax.scatter(
                        [x.mean()],
                        [y.mean()],
                        color=colour,
                        marker=marker,
                        s=70,
                        label=method,
                        edgecolors="black",
                        linewidths=0.5,
                        zorder=3,
                    )
                    # staggered label offsets keep neighbouring points' names apart
                    offset = _LABEL_OFFSETS[methods.index(method) % len(_LABEL_OFFSETS)]
                    ax.annotate(method, (x.mean(), y.mean()), xytext=offset, textcoords="offset points", fontsize=8)
            if kind == "forget_vs_test":
                if "acc/forget" in reference and test in reference:
                    ox, oy = 100 * reference["acc/forget"], 100 * reference[test]
                    ax.scatter(
                        [ox],
                        [oy],
                        marker="*",
                        s=350,
                        color="gold",
                        edgecolors="black",
                        zorder=4,
                        label="retrain (oracle)",
                    )
                    ax.annotate(
                        "retrain (oracle): the target",
                        (ox, oy),
                        xytext=(6, -12),
                        textcoords="offset points",
                        fontsize=9,
                        weight="bold",
                    )
                ax.set_xlabel("forget accuracy (%): closer to the oracle's is better")
                remaining = " on the remaining classes" if test.endswith("retain") else ""
                ax.set_ylabel(f"test accuracy{remaining} (%): higher is better")
            else:
                ax.scatter(
                    [1.0],
                    [0.0],
                    marker="*",
                    s=350,
                    color="gold",
                    edgecolors="black",
                    zorder=4,
                    label="retrain (oracle)",
                )
                ax.annotate(
                    "retrain (oracle)", (1.0, 0.0), xytext=(6, 6), textcoords="offset points", fontsize=9, weight="bold"
                )
                ax.set_xscale("log")
                ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
                ax.set_xlabel("unlearning time / retraining time (log; left of 1 = cheaper than retraining)")
                ax.set_ylabel("average gap to retrain (pp): lower is better")
                ax.set_ylim(bottom=-2)
            ax.grid(True, alpha=0.3)
            ax.set_title(scenario, fontsize=12, weight="bold")
        for ax in list(axes.flat)[len(scenarios) :]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        seen = dict(zip(labels, handles, strict=True))
        for ax in list(axes.flat)[1 : len(scenarios)]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(label, handle)
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),  # below the axes and their labels; savefig's tight box keeps it
            ncol=min(3 * columns, len(seen)),
            fontsize=9,
            frameon=False,
        )
        title = (
            "Forget vs test accuracy (mean over seeds)"
            if kind == "forget_vs_test"
            else "Cost vs average gap to retraining (mean over seeds)"
        )
        fig.suptitle(title, fontsize=14)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(out / f"{kind}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-unlearn-benchmark`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn-benchmark",
        description="Run unlearning methods on scenarios of an embedded dataset, or on your own classifier and data, "
        "against the retrain oracle.",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="method presets to run (default: all)")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=None, help="default: all")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per method and scenario (default 2)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: 2 on CPU)")
    parser.add_argument("--out", default="benchmark", help="output folder (default ./benchmark)")
    parser.add_argument("--recipe", default="mnist5k", help="embedded dataset: mnist5k (default) or digits8x8")
    parser.add_argument("--cache-dir", default=None, help="cache of original / retrained models")
    parser.add_argument("--recipe-epochs", type=int, default=None, help="epochs of the original and oracle")
    parser.add_argument(
        "--presets",
        default=None,
        help="folder of <scenario>/<method>.yaml presets (default: the shipped mnist5k configs)",
    )
    add_ray_address_argument(parser, "the jobs")
    own = add_problem_arguments(
        parser,
        "run the presets on your classifier and data instead of the embedded dataset (method settings stay the "
        "presets'; your data's scenario, or each of --scenarios, is run)",
    )
    own.add_argument("--oracle", default=None, help="weights of the retrain oracle (one scenario)")
    own.add_argument(
        "--oracle-config", default=None, help="fit config that retrains the oracle (trained once, cached in --out)"
    )
    return parser


def problem_from_args(ns: argparse.Namespace) -> UserProblem | None:
    """The user's problem of ``--classifier`` / ``--data`` / ``--oracle[-config]``, or ``None`` without them.

    Raises:
        ValueError: If only one of ``--classifier`` and ``--data`` is given, or the oracle is missing.
        FileNotFoundError: If a named file does not exist.
    """
    if ns.classifier is None and ns.data is None:
        if ns.oracle is not None or ns.oracle_config is not None:
            raise ValueError("--oracle / --oracle-config go with --classifier and --data")
        return None
    if ns.classifier is None or ns.data is None:
        raise ValueError("your own problem needs both --classifier FILE and --data FILE")
    classifier, data = load_spec(ns.classifier, "model"), load_spec(ns.data, "data")
    if ns.scenarios:
        scenarios = {name: SCENARIOS[name] for name in ns.scenarios}
    else:
        scenarios = {preset_scenario(data): data["init_args"]["scenario"]}
    return UserProblem(classifier, data, scenarios, ns.oracle, ns.oracle_config, Path(ns.data).stem)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-unlearn-benchmark``."""
    parser = build_parser()
    ns = parser.parse_args(args)
    from lightning_unlearn.jobs import engine_from_address

    try:
        problem = problem_from_args(ns)
        with engine_from_address(ns.ray_address):
            run_benchmark(
                methods=ns.methods,
                scenarios=ns.scenarios,
                seeds=ns.seeds,
                workers=ns.workers,
                out=ns.out,
                recipe=ns.recipe,
                cache_dir=ns.cache_dir,
                recipe_epochs=ns.recipe_epochs,
                presets=ns.presets,
                problem=problem,
            )

    except (ValueError, FileNotFoundError) as error:  # a bad method / scenario / preset / file: one line, exit 2
        parser.error(str(error))


if __name__ == "__main__":
    main()
