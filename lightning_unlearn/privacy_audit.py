"""``lightning-unlearn-audit``: per-example privacy audit of an unlearning method across many models.

Trains ``M`` retrained models (from scratch on the retain set, training seeds ``0 .. M-1``) and ``M`` models of the
audited *subject* on the same split, evaluates every model on every forget example, and computes:

- the per-example ε̂ of "Forget with Precision" (hinge scores, Gaussian fits, likelihood-ratio thresholds,
  δ = 0.05 by default): ``audit/eps_median`` (lower = more forgotten), ``audit/eps_inf_frac``,
  ``audit/eps_undefined_frac``, ``audit/eps_ceiling``;
- the NeurIPS-2023 challenge score: ``audit/challenge_forget_quality`` and ``audit/challenge_score`` (higher =
  better, ≈ 1 for a perfect method).

Subjects: ``method`` (the unlearning run of ``--config``, seeds ``0 .. M-1``, each from the same original model),
``original`` (original models trained on all data with training seeds ``0 .. M-1``: never unlearned, the
worst case) and ``retrained`` (retrained models with the disjoint seeds ``M .. 2M-1``: the floor that finitely many
models allow).

Outputs in ``--out``: ``per_example.csv`` (one row per forget example), ``summary.json``, ``epsilon_hist.png``,
TensorBoard scalars under ``tensorboard/`` and one result file per model under ``models/`` (an interrupted audit
resumes from them; a method run interrupted mid-training resumes from its ``last.ckpt``).

Models train in parallel worker processes (``--workers``; one CUDA device per worker when there are GPUs).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from lightning_unlearn.jobs import Job, add_ray_address_argument, cli_fit, default_workers, run_jobs, takes_seed
from lightning_unlearn.metrics.audit import (
    challenge_epsilon,
    challenge_score,
    forget_quality,
    hinge_scores,
    logit_confidence,
    per_example_epsilon,
    summarize_epsilon,
)
from lightning_unlearn.problem import add_problem_arguments
from lightning_unlearn.validation import check_integer

__all__ = ["AuditResult", "ModelSource", "main", "run_audit"]

SUBJECTS = ("method", "original", "retrained")
BN_MODES = ("eval", "train")
EVAL_SPLITS = ("forget", "retain", "test", "test_retain")


@dataclass(frozen=True)
class ModelSource:
    """How the models of one group are made.

    Args:
        kind: ``"recipe"`` (an embedded dataset's cached recipe, see
            :func:`~lightning_unlearn.pretrained.pretrained_classifier`) or ``"config"`` (a ``lightning-unlearn
            fit`` run of ``configs``).
        mode: Recipe mode, ``"retrain"`` or ``"pretrain"``.
        configs: Config files of a ``"config"`` source.
        seed_argument: Whether the config's method takes a ``seed`` argument (set to each model's seed).
    """

    kind: Literal["recipe", "config"]
    mode: Literal["retrain", "pretrain"] = "retrain"
    configs: tuple[str, ...] = ()
    seed_argument: bool = False


@dataclass(frozen=True)
class AuditSetup:
    """What every model job needs (picklable)."""

    eval_path: Path
    recipe: str | None
    scenario: Any
    split_seed: int
    epochs: int | None
    cache_dir: str | None
    bn_mode: str


@dataclass
class AuditResult:
    """The audit's numbers (also written to ``summary.json``)."""

    summary: dict[str, float]
    epsilon: np.ndarray
    challenge: np.ndarray
    out: Path


# ---------------------------------------------------------------------------------------------- one model (worker)
def model_job(source: ModelSource, seed: int, setup: AuditSetup, result: Path, run_dir: Path) -> None:
    """Train (or load from cache) one model of a group and write its evaluation to ``result``."""
    if source.kind == "recipe":
        from lightning_unlearn.pretrained import pretrained_classifier

        if setup.recipe is None:
            raise ValueError("a recipe source needs an embedded datamodule")
        model = pretrained_classifier(
            setup.recipe,
            source.mode,
            scenario=setup.scenario,
            seed=setup.split_seed,
            train_seed=seed,
            epochs=setup.epochs,
            cache_dir=setup.cache_dir,
            progress=False,
        )
    else:
        overrides = [f"--seed_everything={seed}", f"--data.init_args.shuffle_seed={seed}", "--trainer.callbacks=[]"]
        if source.seed_argument:
            overrides.append(f"--model.init_args.seed={seed}")
        cli = cli_fit(source.configs, overrides, run_dir)
        model = cli.model.model
    data = torch.load(setup.eval_path, weights_only=True)
    evaluation = evaluate(model.cpu(), data, setup.bn_mode)
    tmp = result.with_suffix(".tmp")
    torch.save(evaluation, tmp)
    tmp.replace(result)  # the result appears complete or not at all


@torch.no_grad()
def evaluate(model: nn.Module, data: dict[str, Tensor], bn_mode: str = "eval", batch_size: int = 100) -> dict[str, Any]:
    """Forget-split logits and retain / test accuracy of ``model`` on the materialised evaluation data."""
    model.train(bn_mode == "train")
    out: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        if f"{split}_x" not in data:
            continue
        x, y = data[f"{split}_x"], data[f"{split}_y"]
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else None
        if split == "forget":
            out["forget_logits"] = logits.float() if logits is not None else torch.zeros(0)
        else:
            correct = int((logits.argmax(1) == y).sum()) if logits is not None else 0
            out[f"{split}_acc"] = correct / max(len(y), 1)
    model.eval()
    return out


# ---------------------------------------------------------------------------------------------- setup (parent)
def _recipe_of(datamodule: Any) -> str | None:
    from lightning_unlearn.pretrained import RECIPES

    for name, recipe in RECIPES.items():
        if type(datamodule) is recipe.datamodule:
            return name
    return None


def materialise_eval_data(datamodule: Any, path: Path) -> None:
    """Write the forget / retain / test(_retain) evaluation tensors (index order) of ``datamodule`` to ``path``."""
    datamodule.setup("fit")
    loaders = datamodule.val_dataloader()
    data: dict[str, Tensor] = {}
    for split in EVAL_SPLITS:
        if split not in loaders:
            continue
        xs, ys, indices = [], [], []
        for batch in loaders[split]:  # LabelledBatch
            xs.append(batch.input)
            ys.append(batch.target)
            indices.append(batch.index)
        if not xs:
            continue
        index = torch.cat(indices)
        order = torch.argsort(index)
        data[f"{split}_x"] = torch.cat(xs)[order]
        data[f"{split}_y"] = torch.cat(ys)[order]
        data[f"{split}_index"] = index[order]
    if "forget_x" not in data or len(data["forget_x"]) == 0:
        raise ValueError("the audit needs a non-empty forget split")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)


def _config_datamodule(configs: Sequence[str]) -> tuple[Any, bool]:
    """The datamodule of the configs and whether their method takes a seed (builds the original model once)."""
    from lightning_unlearn.main import UnlearnCLI

    args: list[str] = []
    for config in configs:
        args += ["--config", str(config)]
    cli = UnlearnCLI(args=args, run=False)
    return cli.datamodule, takes_seed(type(cli.model))


def _method_takes_seed(configs: Sequence[str]) -> bool:
    """Whether the method of the composed config files (the last ``model.class_path``) takes a ``seed`` argument."""
    import yaml

    from lightning_unlearn.jobs import import_class
    from lightning_unlearn.presets import config_path

    class_path = None
    for config in configs:
        path = Path(config) if Path(config).is_file() else config_path(config)
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        class_path = model.get("class_path", class_path)
    return class_path is not None and takes_seed(import_class(class_path))


# ---------------------------------------------------------------------------------------------- the audit
def run_audit(
    subject: str = "original",
    configs: Sequence[str] = (),
    retrain_configs: Sequence[str] = (),
    models: int = 32,
    workers: int | None = None,
    out: str | Path = "audits/original",
    delta: float = 0.05,
    challenge_delta: float = 1e-5,
    recipe: str = "mnist5k",
    forget_fraction: float = 0.1,
    epochs: int | None = None,
    cache_dir: str | None = None,
    bn_mode: str = "eval",
    console: Console | None = None,
) -> AuditResult:
    """Run (or resume) an audit; see the module docstring and ``lightning-unlearn-audit --help``.

    Raises:
        ValueError: On an unknown subject or BN mode, fewer than 2 models, a ``method`` subject without configs, or
            a non-embedded datamodule without ``retrain_configs``.
    """
    console = console or Console()
    if subject not in SUBJECTS:
        raise ValueError(f"subject must be one of {SUBJECTS}, got {subject!r}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    check_integer("models", models, 2)
    if subject == "method" and not configs:
        raise ValueError("subject 'method' needs the unlearning run's config (--config)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    seed_argument = False
    if configs:
        datamodule, seed_argument = _config_datamodule(configs)
    else:
        from lightning_unlearn.datamodules import RandomRemoval
        from lightning_unlearn.pretrained import RECIPES

        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
        datamodule = RECIPES[recipe].datamodule(scenario=RandomRemoval(fraction=forget_fraction))
    recipe_name = _recipe_of(datamodule)
    eval_path = out / "eval_data.pt"
    if not eval_path.exists():
        materialise_eval_data(datamodule, eval_path)
    setup = AuditSetup(eval_path, recipe_name, datamodule.scenario, int(datamodule.seed), epochs, cache_dir, bn_mode)

    if retrain_configs:
        retrain = ModelSource(
            "config",
            configs=tuple(str(c) for c in retrain_configs),
            seed_argument=_method_takes_seed(retrain_configs),  # RetrainOracle: a fresh initialisation per model
        )
    elif recipe_name is not None:
        retrain = ModelSource("recipe", mode="retrain")
    else:
        raise ValueError(
            f"{type(datamodule).__name__} has no embedded recipe: give the retrain oracle's config (--retrain-config)"
        )
    if subject == "method":
        source = ModelSource("config", configs=tuple(str(c) for c in configs), seed_argument=seed_argument)
        first = 0
    elif subject == "original":
        if recipe_name is None:
            raise ValueError("subject 'original' needs an embedded datamodule (mnist5k or digits8x8)")
        source, first = ModelSource("recipe", mode="pretrain"), 0
    else:
        source, first = retrain, models

    jobs = [_job("retrained", retrain, seed, setup, out) for seed in range(models)]
    jobs += [_job(subject, source, seed, setup, out) for seed in range(first, first + models)]
    n_workers = workers if workers is not None else default_workers()
    console.print(
        f"Audit of [bold]{subject}[/bold]: {models} retrained + {models} {subject} models, {n_workers} worker(s); "
        f"results in {out}"
    )
    paths = run_jobs(jobs, workers=n_workers, description="training models", console=console)
    retrained = [torch.load(p, weights_only=True) for p in paths[:models]]
    subjects = [torch.load(p, weights_only=True) for p in paths[models:]]
    data = torch.load(eval_path, weights_only=True)
    result = summarise(retrained, subjects, data, delta, challenge_delta, out)
    _report(result, subject, console)
    return result


def _job(group: str, source: ModelSource, seed: int, setup: AuditSetup, out: Path) -> Job:
    name = f"{group}_{seed:03d}"
    result = out / "models" / f"{name}.pt"
    return Job(name, result, model_job, (source, seed, setup, result, out / "runs" / name))


def summarise(
    retrained: Sequence[dict[str, Any]],
    subjects: Sequence[dict[str, Any]],
    data: dict[str, Tensor],
    delta: float,
    challenge_delta: float,
    out: Path,
) -> AuditResult:
    """Compute the audit from the per-model evaluations and write the CSV, JSON, histogram and TensorBoard."""
    labels = data["forget_y"].numpy()
    logits_r = np.stack([r["forget_logits"].double().numpy() for r in retrained])
    logits_u = np.stack([s["forget_logits"].double().numpy() for s in subjects])
    m = len(retrained)
    hinge_r, hinge_u = hinge_scores(logits_r, labels), hinge_scores(logits_u, labels)
    eps = per_example_epsilon(hinge_r, hinge_u, delta=delta)
    eps_summary = summarize_epsilon(eps, m, delta=delta)
    confidence_r, confidence_u = logit_confidence(logits_r, labels), logit_confidence(logits_u, labels)
    challenge = challenge_epsilon(confidence_r, confidence_u, delta=challenge_delta)
    quality = forget_quality(challenge, m)
    test_key = "test_retain_acc" if "test_retain_acc" in retrained[0] else "test_acc"
    accuracy = {
        "retain_acc_retrained": float(np.mean([r["retain_acc"] for r in retrained])),
        "retain_acc_subject": float(np.mean([s["retain_acc"] for s in subjects])),
        "test_acc_retrained": float(np.mean([r[test_key] for r in retrained])),
        "test_acc_subject": float(np.mean([s[test_key] for s in subjects])),
    }
    score = challenge_score(
        quality,
        accuracy["retain_acc_subject"],
        accuracy["retain_acc_retrained"],
        accuracy["test_acc_subject"],
        accuracy["test_acc_retrained"],
    )
    summary = {
        **eps_summary.as_dict(prefix="audit/"),
        "audit/challenge_forget_quality": quality,
        "audit/challenge_score": score,
        **{f"audit/{k}": v for k, v in accuracy.items()},
        "models": m,
        "forget_examples": len(labels),
        "delta": delta,
    }
    _write_outputs(out, summary, data, labels, eps, challenge, hinge_r, hinge_u)
    return AuditResult(summary, eps, challenge, out)


def _write_outputs(
    out: Path,
    summary: dict[str, float],
    data: dict[str, Tensor],
    labels: np.ndarray,
    eps: np.ndarray,
    challenge: np.ndarray,
    hinge_r: np.ndarray,
    hinge_u: np.ndarray,
) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(out / "per_example.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["index", "label", "epsilon", "challenge_epsilon", "hinge_retrained_mean", "hinge_subject_mean"]
        writer.writerow(header)
        for row in zip(
            data["forget_index"].tolist(),
            labels.tolist(),
            eps.tolist(),
            challenge.tolist(),
            hinge_r.mean(0).tolist(),
            hinge_u.mean(0).tolist(),
            strict=True,
        ):
            writer.writerow(row)
    _histogram(out / "epsilon_hist.png", eps, summary)
    from torch.utils.tensorboard import SummaryWriter

    writer_tb = SummaryWriter(str(out / "tensorboard"))
    for name, value in summary.items():
        if name.startswith("audit/") and math.isfinite(value):
            writer_tb.add_scalar(name, value, 0)
    finite = eps[np.isfinite(eps)]
    if len(finite):
        writer_tb.add_histogram("audit/epsilon", finite, 0)
    writer_tb.close()


def _histogram(path: Path, eps: np.ndarray, summary: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = eps[np.isfinite(eps)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(finite, bins=30, color="#4477aa")
    median = summary["audit/eps_median"]
    if math.isfinite(median):
        ax.axvline(median, color="#cc3311", label=f"median {median:.3f}")
    ax.axvline(summary["audit/eps_ceiling"], color="grey", linestyle="--", label="ceiling")
    n_inf = int(np.isposinf(eps).sum())
    n_nan = int(np.isnan(eps).sum())
    ax.set_title(f"per-example ε̂ (M = {int(summary['models'])}; +∞: {n_inf}, undefined: {n_nan})")
    ax.set_xlabel("ε̂")
    ax.set_ylabel("forget examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report(result: AuditResult, subject: str, console: Console) -> None:
    table = Table(title=f"Privacy audit: {subject} vs retrained")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.summary.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"per_example.csv, summary.json, epsilon_hist.png and tensorboard/ in [bold]{result.out}[/bold]")


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-unlearn-audit`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn-audit",
        description="Per-example privacy audit (epsilon estimate and NeurIPS-2023 challenge score) of an unlearning "
        "method against retrained models.",
    )
    parser.add_argument(
        "--subject",
        choices=SUBJECTS,
        default=None,
        help="what to audit (default: 'method' with --config, else 'original')",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="config of the unlearning run (repeatable); its datamodule defines the split",
    )
    parser.add_argument(
        "--retrain-config",
        action="append",
        default=[],
        help="config of the retrain oracle (needed for datamodules without an embedded recipe)",
    )
    parser.add_argument("--models", type=int, default=32, help="models per group (default 32)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: 2 on CPU, one per GPU)")
    parser.add_argument("--out", default=None, help="output folder (default audits/<subject>)")
    parser.add_argument("--delta", type=float, default=0.05, help="delta of the epsilon estimate (default 0.05)")
    parser.add_argument("--challenge-delta", type=float, default=1e-5, help="delta of the challenge score")
    parser.add_argument("--recipe", default="mnist5k", help="embedded dataset without --config (default mnist5k)")
    parser.add_argument("--forget-fraction", type=float, default=0.1, help="random forget fraction without --config")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs of recipe models (default: the recipe's)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache of recipe models (default $LIGHTNING_UNLEARN_CACHE or ~/.cache/lightning-unlearn)",
    )
    parser.add_argument(
        "--bn-mode",
        choices=BN_MODES,
        default="eval",
        help="BatchNorm mode of the evaluation ('train' replicates the paper)",
    )
    add_ray_address_argument(parser, "the training of the models")
    own = add_problem_arguments(
        parser, "audit a shipped method preset on your classifier and data (with --retrain-config: how to retrain)"
    )
    own.add_argument("--method", default=None, help="shipped preset to audit, e.g. ssd (its scenario's folder)")
    return parser


def user_configs(ns: argparse.Namespace, out: Path) -> tuple[list[str], list[str]]:
    """The method and retrain configs of ``--method`` / ``--classifier`` / ``--data`` (written into ``out``).

    The shipped preset of ``--method`` for the data's scenario kind runs with the user's classifier and data
    substituted (:func:`~lightning_unlearn.problem.compose`); every ``--retrain-config`` is composed the same way
    on the retain set.

    Raises:
        ValueError: If one of the three options or ``--retrain-config`` is missing, or ``--config`` is also given.
    """
    import yaml

    from lightning_unlearn.benchmark import load_preset
    from lightning_unlearn.problem import compose, compose_oracle, load_spec, preset_scenario

    if ns.method is None or ns.classifier is None or ns.data is None:
        raise ValueError("an audit of your own problem needs --method, --classifier and --data together")
    if ns.config:
        raise ValueError("--method builds the method's config: do not also give --config")
    if not ns.retrain_config:
        raise ValueError("an audit of your own problem needs --retrain-config (how to retrain your classifier)")
    classifier, data = load_spec(ns.classifier, "model"), load_spec(ns.data, "data")
    method = compose(load_preset(ns.method, preset_scenario(data)), classifier, data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "method.yaml").write_text(yaml.safe_dump(method, sort_keys=False))
    retrain: dict[str, Any] = {}
    for path in ns.retrain_config:
        retrain = _merge(retrain, yaml.safe_load(Path(path).read_text()) or {})
    (out / "retrain.yaml").write_text(yaml.safe_dump(compose_oracle(retrain, classifier, data), sort_keys=False))
    return [str(out / "method.yaml")], [str(out / "retrain.yaml")]


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` key by key (nested mappings merged), as repeated ``--config`` files compose."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-unlearn-audit``."""
    parser = build_parser()
    ns = parser.parse_args(args)
    subject = ns.subject or ("method" if ns.config or ns.method else "original")
    from lightning_unlearn.jobs import engine_from_address

    if ns.method is not None or ns.classifier is not None or ns.data is not None:
        try:
            ns.config, ns.retrain_config = user_configs(ns, Path(ns.out or f"audits/{subject}"))
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
    with engine_from_address(ns.ray_address):
        _audit(ns, subject)


def _audit(ns: argparse.Namespace, subject: str) -> None:
    run_audit(
        subject=subject,
        configs=ns.config,
        retrain_configs=ns.retrain_config,
        models=ns.models,
        workers=ns.workers,
        out=ns.out or f"audits/{subject}",
        delta=ns.delta,
        challenge_delta=ns.challenge_delta,
        recipe=ns.recipe,
        forget_fraction=ns.forget_fraction,
        epochs=ns.epochs,
        cache_dir=ns.cache_dir,
        bn_mode=ns.bn_mode,
    )


if __name__ == "__main__":
    main()
