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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from lightning_unlearn.jobs import Job, cli_fit, default_workers, import_class, run_jobs, takes_seed

__all__ = ["METHODS", "SCENARIOS", "MethodPreset", "main", "run_benchmark"]

_DM = "lightning_unlearn.datamodules"
_M = "lightning_unlearn.methods"


@dataclass(frozen=True)
class MethodPreset:
    """A method's benchmark settings on the embedded data (the tuned values of the ``configs/mnist5k`` files).

    Args:
        class_path: The method class.
        init_args: Its arguments (besides ``model``).
        max_epochs: ``trainer.max_epochs`` (the sum of the stages for multi-stage methods).
        trainer: Further trainer options.
        per_scenario: Argument overrides per scenario name.
        scenarios: The scenarios the method is run on by default (``None``: all).
    """

    class_path: str
    init_args: Mapping[str, Any] = field(default_factory=dict)
    max_epochs: int = 1
    trainer: Mapping[str, Any] = field(default_factory=dict)
    per_scenario: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    scenarios: tuple[str, ...] | None = None

    def arguments(self, scenario: str) -> dict[str, Any]:
        """The init arguments for ``scenario``."""
        return {**self.init_args, **self.per_scenario.get(scenario, {})}


_STAGED = {"reload_dataloaders_every_n_epochs": 1}
_PRECISION_PRUNING = {"overfit_lr": 0.01, "overfit_epochs": 20, "quantile": 0.3, "retain_lr": 1e-3, "retain_epochs": 5}
_LAF = {"latent_dim": 8, "vae_epochs": 10, "unlearn_epochs": 20, "lr_ue": 5e-5, "lr_ra": 1e-4, "temperature": 20.0}

#: Benchmark presets (library-tuned for the mnist5k ``laf_cnn``; see the matching configs and their comments).
METHODS: dict[str, MethodPreset] = {
    "finetune": MethodPreset(f"{_M}.Finetune", {"lr": 0.01}, 5, per_scenario={"random_10pct": {"lr": 1e-3}}),
    "gradient_ascent": MethodPreset(f"{_M}.GradientAscent", {"lr": 1e-4, "forget_loss_ceiling": 2.5}, 2),
    "neggrad_plus": MethodPreset(
        f"{_M}.GradientAscent",
        {"lr": 1e-3, "forget_weight": 0.1, "retain_weight": 1.0, "forget_loss_ceiling": 5.0},
        3,
    ),
    "random_label": MethodPreset(f"{_M}.RandomLabel", {"lr": 1e-3, "retain_weight": 1.0}, 3),
    # SSD / JiT: the class-removal values select (or move) far too much when the forget set looks like the rest of
    # the data; the published SSD alpha = 10, lambda = 1 and a smaller JiT step suit those scenarios.
    "ssd": MethodPreset(
        f"{_M}.SSD",
        {"alpha": 0.25, "lambda_": 0.01, "importance_batch_size": 64},
        1,
        per_scenario={name: {"alpha": 10.0, "lambda_": 1.0} for name in ("random_10pct", "k16", "noisy_labels")},
    ),
    "lfssd": MethodPreset(f"{_M}.LFSSD", {"alpha": 2.0, "lambda_": 1.0, "importance_batch_size": 64}, 1),
    "jit": MethodPreset(
        f"{_M}.JiT",
        {"sigma": 0.5, "lr": 7e-4, "n_perturbations": 25},
        1,
        per_scenario={name: {"lr": 1e-4} for name in ("random_10pct", "noisy_labels")},
    ),
    "laf": MethodPreset(f"{_M}.LAF", _LAF, 40, _STAGED),
    "laf_r": MethodPreset(f"{_M}.LAF", {**_LAF, "repair": True, "repair_epochs": 5, "repair_lr": 1e-4}, 45, _STAGED),
    "l2ul": MethodPreset(
        f"{_M}.L2UL",
        {
            "num_classes": 10,
            "variant": "adv_imp",
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}},
            "num_adv_per_instance": 8,
            "pgd_eps": 1.0,
            "pgd_step": 0.1,
            "pgd_iters": 100,
            "adv_batch_size": 256,
            "forget_batch_size": 32,
            "max_epochs": 300,
        },
        100_000,
        {"enable_checkpointing": False},
        # instance-wise: 8 PGD examples of 100 steps per forgotten sample make it prohibitive beyond k instances
        scenarios=("k16",),
    ),
    "poison": MethodPreset(f"{_M}.Poison", {"lr": 7e-4, "epochs": 1}, 1),
    "poison_full": MethodPreset(f"{_M}.PoisonFull", {"lr": 2e-3, "epochs": 5, "schedule": "cosine"}, 5),
    "hybrid": MethodPreset(
        f"{_M}.Hybrid",
        {"forget_lr": 3e-3, "forget_epochs": 1, "retain_lr": 1e-3, "retain_epochs": 5},
        6,
        _STAGED,
    ),
    "pruning": MethodPreset(f"{_M}.Pruning", _PRECISION_PRUNING, 25, _STAGED),
    "pruning_last": MethodPreset(f"{_M}.PruningLast", _PRECISION_PRUNING, 25, _STAGED),
    "pruning_complex": MethodPreset(
        f"{_M}.PruningComplex", {**_PRECISION_PRUNING, "retain_sample_size": 400}, 45, _STAGED
    ),
    "activation_reset": MethodPreset(
        f"{_M}.ActivationReset",
        {"toll": 0.8, "reset_head": True, "retain_sample_size": 400, "retain_lr": 1e-3, "retain_epochs": 5},
        6,
        _STAGED,
    ),
}

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


# ---------------------------------------------------------------------------------------------- configs
def _scenario_object(scenario: str) -> Any:
    spec = SCENARIOS[scenario]
    return import_class(spec["class_path"])(**spec["init_args"])


def _runs_on(method: str, scenario: str, explicit: bool) -> bool:
    """Whether ``method`` runs on ``scenario``: always when methods were named, else on its default scenarios."""
    supported = METHODS[method].scenarios
    return explicit or supported is None or scenario in supported


def run_config(spec: RunSpec, oracle: Path, original_args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lightning-unlearn fit`` config of one run."""
    from lightning_unlearn.pretrained import RECIPES

    preset = METHODS[spec.method]
    recipe = RECIPES[spec.recipe]
    datamodule = recipe.datamodule()
    channels, height, width = datamodule.input_shape
    init_args: dict[str, Any] = {
        "model": {"class_path": "lightning_unlearn.pretrained.pretrained_classifier", "init_args": dict(original_args)}
    }
    init_args.update(preset.arguments(spec.scenario))
    if takes_seed(import_class(preset.class_path)):
        init_args["seed"] = spec.seed
    max_epochs = preset.max_epochs
    callbacks = [
        {"class_path": "lightning_unlearn.callbacks.ForgettingMetrics", "init_args": {"log_initial": False}},
        {
            "class_path": "lightning_unlearn.callbacks.MembershipInference",
            "init_args": {"attacks": list(ATTACKS), "log_initial": False},
        },
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
    return {
        "seed_everything": spec.seed,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": max_epochs,
            "check_val_every_n_epoch": _NEVER,
            "num_sanity_val_steps": 0,
            "callbacks": callbacks,
            **preset.trainer,
        },
        "model": {"class_path": preset.class_path, "init_args": init_args},
        "data": {
            "class_path": f"{recipe.datamodule.__module__}.{recipe.datamodule.__name__}",
            "init_args": {
                "scenario": SCENARIOS[spec.scenario],
                "batch_size": recipe.batch_size,
                "shuffle_seed": spec.seed,
            },
        },
    }


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
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark and write its outputs; returns the per-run records.

    Raises:
        ValueError: On an unknown method, scenario or recipe, or ``seeds < 1``.
    """
    from lightning_unlearn.pretrained import RECIPES, pretrained_checkpoint

    console = console or Console()
    chosen_methods = list(methods or [])
    methods = chosen_methods or list(METHODS)
    scenarios = list(scenarios) if scenarios else list(SCENARIOS)
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {tuple(METHODS)}")
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose from {tuple(SCENARIOS)}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    out = Path(out)
    n_workers = workers if workers is not None else default_workers()

    # 1. originals and oracles, once per scenario (cached across benchmarks)
    models: dict[tuple[str, str], Path] = {}
    pre_jobs: list[Job] = []
    for scenario in scenarios:
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
    console.print(
        f"Benchmark: {len(methods)} methods x {len(scenarios)} scenarios x {seeds} seeds on {recipe}, "
        f"{n_workers} worker(s); results in {out}"
    )
    run_jobs(pre_jobs, workers=n_workers, description="original and retrained models", console=console)

    # 2. the runs
    jobs = []
    skipped = [
        f"{m} on {sc}" for sc in scenarios for m in methods if not _runs_on(m, sc, explicit=bool(chosen_methods))
    ]
    if skipped:
        console.print(f"Not run (outside the method's scenarios; name the method explicitly to force): {skipped}")
    for scenario in scenarios:
        original_args = {
            "recipe": recipe,
            "scenario": SCENARIOS[scenario],
            "epochs": recipe_epochs,
            "cache_dir": cache_dir,
            "progress": False,
        }
        for method in methods:
            if not _runs_on(method, scenario, explicit=bool(chosen_methods)):
                continue
            for seed in range(seeds):
                spec = RunSpec(method, scenario, seed, recipe, cache_dir, recipe_epochs)
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
            "| avg gap to retrain (pp) | unlearn time / retrain time |",
            "|---|---|---|---|---|---|---|",
        ]
        svc = reference.get("mia/svc_confidence_efficacy")
        lines.append(
            f"| retrain (oracle) | {_pct(reference.get('acc/forget'))} | {_pct(reference.get('acc/retain'))} | "
            f"{_pct(reference.get(test))} | {_pct(svc)} | 0 | 1 |"
        )
        for method, runs in by_method.items():
            lines.append(
                f"| {method} | {_mean_std(_values(runs, 'acc/forget'))} | {_mean_std(_values(runs, 'acc/retain'))} | "
                f"{_mean_std(_values(runs, test))} | {_mean_std(_values(runs, 'mia/svc_confidence_efficacy'))} | "
                f"{_mean_std(_values(runs, 'gap/avg'))} | {_mean_std(_values(runs, 'cost/time_ratio'), 1.0, 3)} |"
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


def _plots(groups: Mapping[str, Mapping[str, list[dict[str, Any]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(groups)
    methods = list(dict.fromkeys(m for by_method in groups.values() for m in by_method))
    colours = plt.get_cmap("tab20")
    for kind in ("forget_vs_test", "cost_vs_gap"):
        fig, axes = plt.subplots(1, len(scenarios), figsize=(4.5 * len(scenarios), 4), squeeze=False)
        for ax, scenario in zip(axes[0], scenarios, strict=True):
            by_method = groups[scenario]
            first = next(iter(by_method.values()))
            test = _test_name(first)
            for i, method in enumerate(methods):
                runs = by_method.get(method)
                if not runs:
                    continue
                if kind == "forget_vs_test":
                    x, y = _values(runs, "acc/forget") * 100, _values(runs, test) * 100
                else:
                    x, y = _values(runs, "cost/time_ratio"), _values(runs, "gap/avg") * 100
                if len(x) and len(y):
                    ax.scatter([x.mean()], [y.mean()], color=colours(i % 20), label=method, s=30)
            if kind == "forget_vs_test":
                reference = first[0]["reference"]
                if "acc/forget" in reference and test in reference:
                    ax.scatter(
                        [100 * reference["acc/forget"]],
                        [100 * reference[test]],
                        marker="*",
                        s=200,
                        color="black",
                        label="retrain (oracle)",
                    )
                ax.set_xlabel("forget accuracy (%)")
                ax.set_ylabel("test accuracy (%)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("unlearning time / retraining time")
                ax.set_ylabel("average gap to retrain (pp)")
            ax.set_title(scenario)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize="small")
        fig.tight_layout(rect=(0, 0, 0.85, 1))
        fig.savefig(out / f"{kind}.png", dpi=100)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-unlearn-benchmark`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn-benchmark",
        description="Run unlearning methods on scenarios of an embedded dataset against the retrain oracle.",
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None, help="default: all")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=None, help="default: all")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per method and scenario (default 2)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: 2 on CPU)")
    parser.add_argument("--out", default="benchmark", help="output folder (default ./benchmark)")
    parser.add_argument("--recipe", default="mnist5k", help="embedded dataset: mnist5k (default) or digits8x8")
    parser.add_argument("--cache-dir", default=None, help="cache of original / retrained models")
    parser.add_argument("--recipe-epochs", type=int, default=None, help="epochs of the original and oracle")
    return parser


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-unlearn-benchmark``."""
    ns = build_parser().parse_args(args)
    run_benchmark(
        methods=ns.methods,
        scenarios=ns.scenarios,
        seeds=ns.seeds,
        workers=ns.workers,
        out=ns.out,
        recipe=ns.recipe,
        cache_dir=ns.cache_dir,
        recipe_epochs=ns.recipe_epochs,
    )


if __name__ == "__main__":
    main()
