"""Original (and retrain-oracle) classifiers of the embedded datasets, trained once and cached.

``pretrained_classifier`` is a factory usable directly as a ``class_path`` in YAML: the quick start injects
``lightning_unlearn.pretrained.pretrained_classifier`` as the method's ``model`` and so needs no download and no
separate pretraining step. The first call trains the library's default recipe (``RECIPES``) and
writes the weights to the cache; later calls load them with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import Trainer
from rich.console import Console
from torch import nn

from lightning_unlearn.callbacks.stage_progress import StageProgressBar
from lightning_unlearn.datamodules import Digits8x8DataModule, MNIST5kDataModule, Scenario, UnlearningDataModule
from lightning_unlearn.methods.classifier import Classifier, RetrainOracle
from lightning_unlearn.models import export_classifier, load_classifier
from lightning_unlearn.validation import is_integer

CACHE_ENV = "LIGHTNING_UNLEARN_CACHE"


@dataclass(frozen=True)
class Recipe:
    """A pretraining recipe of an embedded dataset (Adam, constant learning rate, no augmentation)."""

    datamodule: type[UnlearningDataModule]
    arch: str
    lr: float
    batch_size: int
    epochs: int


#: Library default recipes (measured: ~97 % test accuracy on both).
RECIPES: dict[str, Recipe] = {
    "mnist5k": Recipe(MNIST5kDataModule, "laf_cnn", lr=2e-3, batch_size=128, epochs=8),
    "digits8x8": Recipe(Digits8x8DataModule, "tiny_cnn", lr=1e-2, batch_size=64, epochs=30),
}


def default_cache_dir() -> Path:
    """``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning-unlearn``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lightning-unlearn"))


def pretrained_classifier(
    recipe: str = "mnist5k",
    mode: Literal["pretrain", "retrain"] = "pretrain",
    scenario: Scenario | None = None,
    seed: int = 0,
    train_seed: int | None = None,
    epochs: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """The original classifier (``mode="pretrain"``) or retrain oracle (``"retrain"``) of an embedded dataset.

    Trained with the recipe's defaults on first use and cached (see :func:`pretrained_checkpoint`, same
    arguments); later calls load the weights with ``weights_only=True``.

    Returns:
        The trained classifier, on CPU.
    """
    path = pretrained_checkpoint(recipe, mode, scenario, seed, train_seed, epochs, cache_dir, progress)
    spec = RECIPES[recipe]
    datamodule = spec.datamodule(scenario=scenario, seed=seed, mode=mode)
    channels, height, width = datamodule.input_shape
    return load_classifier(
        spec.arch, datamodule.num_classes, str(path), in_channels=int(channels), input_size=(int(height), int(width))
    )


def pretrained_checkpoint(
    recipe: str = "mnist5k",
    mode: Literal["pretrain", "retrain"] = "pretrain",
    scenario: Scenario | None = None,
    seed: int = 0,
    train_seed: int | None = None,
    epochs: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    train: bool = True,
) -> Path:
    """The cached weights file of an embedded dataset's original classifier or retrain oracle, trained if missing.

    Trained with the recipe's defaults on first use and cached under ``cache_dir``, keyed by everything that
    changes the weights: recipe, mode, seed, epochs, the forget set (retrain oracle) and the corrupted labels
    (noisy-label scenario, whose original model is trained on the corrupted set).

    Args:
        recipe: Embedded dataset recipe, one of ``RECIPES`` (``"mnist5k"``, ``"digits8x8"``).
        mode: ``"pretrain"`` (all training data) or ``"retrain"`` (retain set only; needs the scenario).
        scenario: The unlearning scenario (defines the retain set and any corrupted labels).
        seed: Seed of the split and (unless ``train_seed`` is given) of training.
        train_seed: Seed of the initialisation and of the shuffles, for several models on one split (the privacy
            audit); ``None`` uses ``seed``.
        epochs: Training epochs; ``None`` uses the recipe's.
        cache_dir: Cache folder; ``None`` uses :func:`default_cache_dir`.
        progress: Show a progress bar while training.
        train: Train when the file is missing; ``False`` only returns the path where it is (or would be) cached.

    Returns:
        The path of the raw state dict (``<name>.pt``, with ``<name>.json`` recording the key fields, the test
        accuracy and the training time ``train_time_s``).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    if mode not in ("pretrain", "retrain"):
        raise ValueError(f"mode must be one of ('pretrain', 'retrain'), got {mode!r}")
    spec = RECIPES[recipe]
    n_epochs = spec.epochs if epochs is None else epochs
    if n_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {n_epochs!r}")
    if train_seed is not None and not (is_integer(train_seed) and train_seed >= 0):
        raise ValueError(f"train_seed must be None or an integer >= 0, got {train_seed!r}")
    init_seed = seed if train_seed is None else train_seed
    datamodule = spec.datamodule(
        scenario=scenario, seed=seed, mode=mode, batch_size=spec.batch_size, shuffle_seed=train_seed
    )
    datamodule.setup("fit")
    record = datamodule.split_record()
    key_fields = {
        "recipe": recipe,
        "arch": spec.arch,
        "mode": mode,
        "seed": seed,
        "epochs": n_epochs,
        "lr": spec.lr,
        "batch_size": spec.batch_size,
        "forget": record.get("forget_sha256") if mode == "retrain" else None,
        "noisy": record.get("noisy"),
    }
    if train_seed is not None:  # absent otherwise, so earlier cache keys stay valid
        key_fields["train_seed"] = train_seed
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{recipe}_{spec.arch}_{mode}_{key}.pt"
    num_classes = datamodule.num_classes
    in_channels = datamodule.input_shape[0]
    input_size = (int(datamodule.input_shape[1]), int(datamodule.input_shape[2]))
    if path.exists() or not train:
        return path

    console = Console()
    console.print(f"Training the {mode} classifier '{spec.arch}' on {recipe} ({n_epochs} epochs); cached at {path}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = load_classifier(spec.arch, num_classes, in_channels=in_channels, input_size=input_size)

        def adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=spec.lr)

        module = RetrainOracle(model, optimizer=adam, seed=init_seed) if mode == "retrain" else Classifier(model, adam)
        trainer = Trainer(
            max_epochs=n_epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=[StageProgressBar()] if progress else None,
            limit_val_batches=0,
            deterministic=True,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        train_time = time.perf_counter() - start
    model.eval()
    test_acc = _accuracy(model, datamodule)
    model.train()
    export_classifier(model, str(path))
    meta = {**key_fields, "test_accuracy": test_acc, "train_time_s": train_time}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    kind = "Original" if mode == "pretrain" else "Retrained"
    console.print(f"{kind} classifier ready: test accuracy {100 * test_acc:.1f}%")
    return path


@torch.no_grad()
def _accuracy(model: nn.Module, datamodule: UnlearningDataModule) -> float:
    loader = datamodule.val_dataloader()["test"]
    correct = total = 0
    for batch in loader:  # LabelledBatch
        correct += int((model(batch.input).argmax(1) == batch.target).sum())
        total += len(batch.target)
    return correct / max(total, 1)
