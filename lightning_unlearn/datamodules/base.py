"""``UnlearningDataModule``: the base datamodule, wiring splits, per-phase training loaders and evaluation loaders.

Subclasses only provide the raw data (``load_raw``) and describe the dataset (class attributes). The parts live in
their own modules: the modes (:mod:`~lightning_unlearn.datamodules.modes`), the in-memory data
(:mod:`~lightning_unlearn.datamodules.in_memory`), split resolution (:mod:`~lightning_unlearn.datamodules.splits`),
the samplers (:mod:`~lightning_unlearn.datamodules.samplers`) and ``splits.json``
(:mod:`~lightning_unlearn.datamodules.split_io`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_unlearn.datamodules.in_memory import RawData, SplitDataset
from lightning_unlearn.datamodules.modes import MODES, Mode, check_mode
from lightning_unlearn.datamodules.phases import Phase, phase_at
from lightning_unlearn.datamodules.samplers import evaluation_sampler, loader_seed, training_sampler
from lightning_unlearn.datamodules.scenarios import (
    PRESETS,
    ClassRemoval,
    Continual,
    DatasetInfo,
    Indices,
    Preset,
    Scenario,
    SplitResult,
)
from lightning_unlearn.datamodules.split_io import SPLITS_FILE, split_record, write_splits
from lightning_unlearn.datamodules.splits import (
    ResolvedSplit,
    SplitSources,
    check_sample_size,
    draw_labelled_subset,
    draw_retain_sample,
    eval_split_names,
    resolve_split,
    split_names,
)
from lightning_unlearn.datamodules.transforms import (
    TrainAugment,
    Transform,
    build_eval_transform,
    build_train_transform,
    check_train_augment,
    output_size,
)
from lightning_unlearn.validation import check_choice, check_integer, is_integer

#: Epochs of the default single-phase plan (effectively unbounded).
DEFAULT_PLAN_EPOCHS = 1_000_000_000

__all__ = ["DEFAULT_PLAN_EPOCHS", "MODES", "RawData", "SplitDataset", "UnlearningDataModule"]


class UnlearningDataModule(LightningDataModule):
    """Base datamodule of every unlearning dataset: deterministic splits and the loaders methods consume.

    Splits are a function of (dataset, scenario, seed) only: they never read the global RNG. Modes:

    * ``"pretrain"``: one shuffled loader over the training set ``D`` (noisy labels under ``NoisyLabels``), with
      the pretraining augmentation ``train_augment``; batches ``(x, y)``.
    * ``"retrain"``: the same over the retain set ``R`` (the retrain oracle).
    * ``"unlearn"``: a ``CombinedLoader`` of split loaders for the phase of the installed plan
      (:meth:`set_train_plan`) that contains ``trainer.current_epoch``; default: ``forget`` and ``retain``,
      ``max_size_cycle``, shuffled.

    Evaluation loaders (``val_dataloader``/``test_dataloader``) are a dict in the order of
    :attr:`eval_split_names`, batches ``(x, y, index)``, unshuffled and unaugmented (except ``eval_augment``), with
    an :class:`~lightning_unlearn.datamodules.samplers.UnrepeatedDistributedSampler` under DDP.

    Subclasses set the class attributes and implement :meth:`load_raw`.

    Args:
        scenario: What to forget; ``None`` removes class 0.
        seed: Split seed (integer ``>= 0``); also seeds labelled/retain subsets and loader shuffling.
        shuffle_seed: Seed of the training loaders' shuffles (integer ``>= 0``); ``None`` uses ``seed``. Vary it
            (with ``seed_everything``) to train several models on the same split, as the privacy audit does.
        mode: ``"unlearn"``, ``"pretrain"`` or ``"retrain"``.
        batch_size: Training batch size (a phase may override it).
        eval_batch_size: Evaluation batch size (256 by default: on CPUs, larger batches fall out of cache and run
            slower).
        num_workers: DataLoader worker processes.
        labelled: Whether unlearning training elements carry labels (a phase may override it).
        labelled_fraction: Size of ``retain_labelled`` as a fraction of the retain set, in ``(0, 1]``.
        train_augment: Pretraining augmentation: ``none``, ``crop_flip``, ``crop_flip_rotate``,
            ``autoaugment_crop_flip``, ``laf_resized_crop``.
        augment_unlearning: Apply ``train_augment`` to unlearning training loaders; ``None``: only under
            ``preset="reference"`` with ``laf_resized_crop`` (LAF on CIFAR-10/SVHN).
        eval_augment: Apply ``train_augment`` to evaluation splits drawn from the training set; ``None``: as
            ``augment_unlearning`` (LAF's reference evaluation).
        image_size: Side length of the yielded images; ``None`` keeps the native size (224 for
            ``laf_resized_crop``).
        preset: ``"corrected"`` (default) or ``"reference"``: resolves quirk switches left at ``None``
            (noisy relabel range, LAF augmentation).
        request: Active request of a ``Continual`` scenario (settable between fits); ``None`` means 0, or the
            saved request when restoring a continual ``splits.json``.
        pin_memory: DataLoader ``pin_memory``.
    """

    #: Dataset name, written to and checked against ``splits.json``.
    dataset_name: ClassVar[str] = ""
    #: Class names, index = class id.
    default_class_names: ClassVar[tuple[str, ...]] = ()
    #: Extra accepted class names.
    class_aliases: ClassVar[dict[str, int]] = {}
    #: Fine class names (sub-class removal; CIFAR-20 only).
    fine_class_names: ClassVar[tuple[str, ...] | None] = None
    #: Native ``(C, H, W)``.
    native_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)
    #: Default per-channel normalisation statistics the classifier should use (``None``: pixels in [0, 1]).
    default_mean: ClassVar[tuple[float, ...] | None] = None
    default_std: ClassVar[tuple[float, ...] | None] = None

    def __init__(
        self,
        scenario: Scenario | None = None,
        seed: int = 0,
        mode: Mode = "unlearn",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        labelled: bool = True,
        labelled_fraction: float = 0.1,
        train_augment: TrainAugment = "none",
        augment_unlearning: bool | None = None,
        eval_augment: bool | None = None,
        image_size: int | None = None,
        preset: Preset = "corrected",
        request: int | None = None,
        pin_memory: bool = False,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        # A split smaller than the number of processes leaves some ranks an empty evaluation loader.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        if scenario is None:
            scenario = ClassRemoval([0])
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a Scenario (e.g. ClassRemoval([0])), got {scenario!r}")
        check_integer("seed", seed)
        if shuffle_seed is not None and not (is_integer(shuffle_seed) and shuffle_seed >= 0):
            raise ValueError(f"shuffle_seed must be None or an integer >= 0, got {shuffle_seed!r}")
        check_mode(mode)
        check_integer("batch_size", batch_size, 1)
        check_integer("eval_batch_size", eval_batch_size, 1)
        check_integer("num_workers", num_workers)
        if not 0 < labelled_fraction <= 1:  # any real number (a bool too), as before
            raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction!r}")
        check_train_augment(train_augment)
        check_integer("image_size", image_size, 1, optional=True)
        check_choice("preset", preset, PRESETS)
        self.scenario = scenario
        self.seed = seed
        self.shuffle_seed = shuffle_seed
        self.mode: Mode = mode
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.labelled = labelled
        self.labelled_fraction = float(labelled_fraction)
        self.train_augment: TrainAugment = train_augment
        self.preset: Preset = preset
        laf_reference = preset == "reference" and train_augment == "laf_resized_crop"
        self.augment_unlearning = laf_reference if augment_unlearning is None else bool(augment_unlearning)
        self.eval_augment = self.augment_unlearning if eval_augment is None else bool(eval_augment)
        self.image_size = image_size
        self.pin_memory = pin_memory

        self.num_classes: int = len(self.default_class_names)
        self.class_names: tuple[str, ...] = tuple(self.default_class_names)
        height, width = output_size(train_augment, self.native_shape[1:], image_size)
        self.input_shape: tuple[int, int, int] = (self.native_shape[0], height, width)
        self.mean: tuple[float, ...] | None = self.default_mean
        self.std: tuple[float, ...] | None = self.default_std

        self._raw: RawData | None = None
        self._full_split: SplitResult | None = None
        self._request: int | None = None
        self._validate_request(request)
        self._request = request
        scenario.check(self.dataset_info())

        self._split: SplitResult | None = None
        self._train_targets: Tensor | None = None
        self._plan: list[Phase] | None = None
        self._labelled_indices: dict[int, Tensor] = {}
        self._retain_samples: dict[tuple[int, int], Tensor] = {}
        self._last_retain_sample: tuple[int, Tensor] | None = None
        self._splits_path: Path | None = None
        # Logged beside the method's arguments (TensorBoard's hparams, the checkpoint): which data, which scenario.
        self.save_hyperparameters(
            {
                "data/class": type(self).__name__,
                "data/scenario": repr(scenario),
                "data/mode": mode,
                "data/seed": seed,
                "data/shuffle_seed": shuffle_seed,
                "data/batch_size": batch_size,
                "data/train_augment": train_augment,
                "data/preset": preset,
            }
        )

    # ------------------------------------------------------------------------------------------------ dataset
    def load_raw(self) -> RawData:
        """Load the whole dataset into memory (called once, by :meth:`setup`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_raw()")

    def dataset_info(self) -> DatasetInfo:
        """Description of the dataset used to validate scenarios before loading data."""
        return DatasetInfo(
            num_classes=self.num_classes,
            name=self.dataset_name or None,
            class_names=self.class_names,
            class_aliases=dict(self.class_aliases),
            fine_class_names=self.fine_class_names,
        )

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Load the data (once) and build the split deterministically from ``(scenario, seed)``.

        In ``setup("fit")``, when attached to a trainer with a logger, global rank 0 writes
        ``<trainer.log_dir>/splits.json``.
        """
        if self._raw is None:
            self._raw = self._checked_raw(self.load_raw())
        if self._full_split is None:
            raw = self._raw
            self._full_split = self.scenario.split(
                raw.train_targets,
                self.num_classes,
                self.class_names,
                self.seed,
                test_targets=raw.test_targets,
                fine_targets=raw.train_fine_targets,
                fine_test_targets=raw.test_fine_targets,
                fine_class_names=self.fine_class_names,
                class_aliases=self.class_aliases,
                dataset=self.dataset_name or None,
                preset=self.preset,
            )
            self._apply_request()
        if stage == "fit":
            self._prepare_splits_file()

    def _checked_raw(self, raw: RawData) -> RawData:
        for part in ("train", "test"):
            images: Tensor = getattr(raw, f"{part}_images")
            targets: Tensor = getattr(raw, f"{part}_targets")
            if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.native_shape):
                shape = ", ".join(map(str, self.native_shape))
                raise ValueError(
                    f"{type(self).__name__}: {part} images must have shape (N, {shape}), got {tuple(images.shape)}"
                )
            if images.dtype not in (torch.uint8, torch.float32):
                raise ValueError(f"{type(self).__name__}: images must be uint8 or float32, got {images.dtype}")
            if targets.numel() != images.shape[0]:
                raise ValueError(
                    f"{type(self).__name__}: {images.shape[0]} {part} images but {targets.numel()} targets"
                )
            if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
                raise ValueError(f"{type(self).__name__}: {part} targets must lie in [0, {self.num_classes})")
        return raw

    def _require_setup(self) -> tuple[RawData, SplitResult]:
        if self._raw is None or self._split is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before using the splits or loaders")
        return self._raw, self._split

    # ------------------------------------------------------------------------------------------------ request
    @property
    def request(self) -> int:
        """Active request of a continual scenario (0 otherwise)."""
        if self._request is not None:
            return self._request
        return self._split.request if self._split is not None else 0

    @request.setter
    def request(self, value: int) -> None:
        self._validate_request(value)
        self._request = value
        if self._full_split is not None:
            self._apply_request()

    def _validate_request(self, request: int | None) -> None:
        if request is None:
            return
        if not is_integer(request):
            raise ValueError(f"request must be an integer or None, got {request!r}")
        if self._full_split is not None:
            count = len(self._full_split.requests)
        elif isinstance(self.scenario, Continual):
            count = len(self.scenario.requests)
        elif isinstance(self.scenario, Indices) and self.scenario.is_split_json:
            return  # a restored split file may hold several requests: checked at setup
        else:
            count = 1
        if not 0 <= request < count:
            raise ValueError(f"request must be in [0, {count}) for this scenario ({count} request(s)), got {request}")

    def _apply_request(self) -> None:
        full = self._full_split
        if full is None:
            return
        self._validate_request(self._request)
        self._split = full if self._request is None else full.for_request(self._request)
        raw = self._raw
        if raw is not None:
            self._train_targets = self._split.train_targets(raw.train_targets)

    # ------------------------------------------------------------------------------------------------ split views
    @property
    def split(self) -> SplitResult:
        """The computed :class:`SplitResult` (active request applied)."""
        return self._require_setup()[1]

    @property
    def forget_indices(self) -> Tensor:
        """Sorted training indices of the forget set (active request)."""
        return self._require_setup()[1].forget_indices

    @property
    def retain_indices(self) -> Tensor:
        """Sorted training indices of the retain set."""
        return self._require_setup()[1].retain_indices

    @property
    def test_forget_indices(self) -> Tensor | None:
        """Sorted test indices of the forgotten classes (class/sub-class scenarios), else ``None``."""
        return self._require_setup()[1].test_forget_indices

    @property
    def test_retain_indices(self) -> Tensor | None:
        """Sorted test indices outside the forgotten classes (class/sub-class scenarios), else ``None``."""
        return self._require_setup()[1].test_retain_indices

    @property
    def noisy_labels(self) -> Tensor | None:
        """Noisy label of each forget sample (noisy scenario), aligned with :attr:`forget_indices`."""
        return self._require_setup()[1].noisy_labels

    @property
    def eval_split_names(self) -> list[str]:
        """Evaluation split names, in the order of the evaluation loaders (``dataloader_idx``)."""
        return eval_split_names(self._require_setup()[1])

    def split_names(self) -> list[str]:
        """Every split name :meth:`split_dataset` accepts (besides unions ``a+b``)."""
        return split_names(self._require_setup()[1])

    def split_indices(self, name: str, *, sample_size: int | None = None) -> Tensor:
        """Training (or, for test splits, test) indices of split ``name``, in split order."""
        return self._resolve(name, sample_size)[1]

    def split_targets(self, name: str, *, sample_size: int | None = None) -> Tensor:
        """Labels of split ``name`` in split order (noisy labels on the forget set under ``NoisyLabels``)."""
        return self._resolve(name, sample_size)[2]

    def split_dataset(
        self,
        name: str,
        labelled: bool = True,
        with_index: bool = False,
        *,
        augment: bool = False,
        sample_size: int | None = None,
    ) -> SplitDataset:
        """Materialise a split as a ``Dataset``.

        Args:
            name: ``forget``, ``retain``, ``full``, ``retain_labelled``, ``retain_sample``, ``test``,
                ``test_forget``, ``test_retain``, ``forget_clean``, ``forget_previous``, ``forget_req{s}``, or a
                union ``a+b`` (elements of ``b`` follow those of ``a``; indices are positions in the union).
            labelled: Elements carry labels.
            with_index: Elements carry their position in the split.
            augment: Apply the ``train_augment`` transform instead of the evaluation transform.
            sample_size: Size of ``retain_sample``.
        """
        is_train, positions, targets = self._resolve(name, sample_size)
        raw, _ = self._require_setup()
        images = raw.train_images if is_train else raw.test_images
        transform = self._train_transform() if augment else self._eval_transform()
        return SplitDataset(images, positions, targets, labelled=labelled, with_index=with_index, transform=transform)

    def _resolve(self, name: str, sample_size: int | None) -> ResolvedSplit:
        raw, split = self._require_setup()
        train_targets = self._train_targets if self._train_targets is not None else raw.train_targets
        sources = SplitSources(
            split=split,
            train_targets=train_targets,
            test_targets=raw.test_targets,
            labelled_subset=self._labelled_subset,
            retain_sample=self._retain_sample,
            sample_size=sample_size,
        )
        return resolve_split(name, sources)

    # ------------------------------------------------------------------------------------------------ seeded subsets
    def _labelled_subset(self) -> Tensor:
        _, split = self._require_setup()
        key = split.request
        if key not in self._labelled_indices:
            subset = draw_labelled_subset(
                split.retain_indices, split.labelled_indices, self.labelled_fraction, self.seed
            )
            self._labelled_indices[key] = subset
            self._write_splits_file()
        return self._labelled_indices[key]

    def _retain_sample(self, sample_size: int | None) -> Tensor:
        _, split = self._require_setup()
        retain = split.retain_indices
        size = check_sample_size(sample_size, retain.numel())
        key = (split.request, size)
        if key not in self._retain_samples:
            subset = draw_retain_sample(retain, split.retain_sample_indices, size, self.seed)
            self._retain_samples[key] = subset
            self._last_retain_sample = (split.request, subset)
            self._write_splits_file()
        return self._retain_samples[key]

    # ------------------------------------------------------------------------------------------------ transforms
    def _native_hw(self) -> tuple[int, int]:
        return (self.native_shape[1], self.native_shape[2])

    def _train_transform(self) -> Transform | None:
        return build_train_transform(self.train_augment, self._native_hw(), self.image_size)

    def _eval_transform(self) -> Transform | None:
        return build_eval_transform(self.train_augment, self._native_hw(), self.image_size)

    # ------------------------------------------------------------------------------------------------ plan
    def set_train_plan(self, plan: Sequence[Phase]) -> None:
        """Install the training plan (a method does this in its ``setup("fit")`` hook)."""
        phases = list(plan)
        if not phases:
            raise ValueError("The training plan must hold at least one Phase")
        for phase in phases:
            if not isinstance(phase, Phase):
                raise TypeError(f"Training plan entries must be Phase objects, got {phase!r}")
        self._plan = phases
        self._check_reload(phases)

    @property
    def train_plan(self) -> list[Phase]:
        """The installed plan, or the default one (``forget`` + ``retain``, ``max_size_cycle``, shuffled)."""
        if self._plan is not None:
            return list(self._plan)
        return [Phase(epochs=DEFAULT_PLAN_EPOCHS, splits=("forget", "retain"))]

    def _check_reload(self, plan: Sequence[Phase]) -> None:
        if len(plan) <= 1 or self.trainer is None:
            return
        reload = getattr(self.trainer, "reload_dataloaders_every_n_epochs", None)
        if reload is not None and reload != 1:
            raise ValueError(
                f"A training plan with {len(plan)} phases needs the loaders rebuilt every epoch: set "
                f"Trainer(reload_dataloaders_every_n_epochs=1) (trainer.reload_dataloaders_every_n_epochs: 1), "
                f"got {reload}"
            )

    def current_phase(self) -> tuple[int, Phase]:
        """``(index, phase)`` of the plan phase containing ``trainer.current_epoch`` (epoch 0 without trainer)."""
        return phase_at(self.train_plan, self._epoch())

    # ------------------------------------------------------------------------------------------------ loaders
    def _trainer_attr(self, name: str, default: Any) -> Any:
        trainer = self.trainer
        if trainer is None:
            return default
        try:
            value = getattr(trainer, name)
        except (AttributeError, RuntimeError):
            return default
        return default if value is None else value

    def _epoch(self) -> int:
        return int(self._trainer_attr("current_epoch", 0))

    def _loader(
        self,
        dataset: SplitDataset,
        batch_size: int,
        shuffle: bool,
        name: str,
        unrepeated: bool = False,
        global_batches: bool = False,
    ) -> DataLoader:
        # Shuffled orders depend only on (seed, split name, epoch): a resumed run sees the same batches.
        base = self.seed if self.shuffle_seed is None else self.shuffle_seed
        sampler = training_sampler(
            dataset,
            seed=loader_seed(base, name),
            epoch=self._epoch(),
            shuffle=shuffle,
            world_size=int(self._trainer_attr("world_size", 1)),
            rank=int(self._trainer_attr("global_rank", 0)),
            unrepeated=unrepeated,
            global_batches=global_batches,
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """Training data for the current mode and phase (see the class docstring)."""
        _, split = self._require_setup()
        if self.mode in ("pretrain", "retrain"):
            if self.mode == "pretrain":
                dataset = self._pretrain_dataset()
            else:
                dataset = self.split_dataset("retain", augment=True)
            return self._loader(dataset, self.batch_size, True, self.mode)
        plan = self.train_plan
        self._check_reload(plan)
        _, phase = phase_at(plan, self._epoch())
        labelled = self.labelled if phase.labelled is None else phase.labelled
        loaders = {}
        for name in phase.splits:
            dataset = self.split_dataset(
                name,
                labelled=labelled or name == "retain_labelled",
                with_index=phase.with_index,
                augment=self.augment_unlearning,
                sample_size=phase.sample_size,
            )
            batch_size = phase.batch_size or self.batch_size
            loaders[name] = self._loader(
                dataset,
                batch_size,
                phase.shuffle,
                name,
                unrepeated=phase.unrepeated,
                global_batches=phase.global_batches,
            )
        return CombinedLoader(loaders, mode=phase.mode)

    def _pretrain_dataset(self) -> SplitDataset:
        raw, _ = self._require_setup()
        targets = self._train_targets if self._train_targets is not None else raw.train_targets
        positions = torch.arange(targets.numel())
        return SplitDataset(raw.train_images, positions, targets, transform=self._train_transform())

    def _eval_loaders(self) -> dict[str, DataLoader]:
        self._require_setup()
        world_size = int(self._trainer_attr("world_size", 1))
        rank = int(self._trainer_attr("global_rank", 0))
        loaders: dict[str, DataLoader] = {}
        for name in self.eval_split_names:
            from_train = not name.startswith("test")
            dataset = self.split_dataset(name, labelled=True, with_index=True, augment=self.eval_augment and from_train)
            sampler = evaluation_sampler(dataset, world_size=world_size, rank=rank)
            loaders[name] = DataLoader(
                dataset,
                batch_size=self.eval_batch_size,
                shuffle=False,
                sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                drop_last=False,
            )
        return loaders

    def val_dataloader(self) -> dict[str, DataLoader]:
        """Evaluation loaders ``{name: DataLoader}`` in :attr:`eval_split_names` order; batches ``(x, y, index)``."""
        return self._eval_loaders()

    def test_dataloader(self) -> dict[str, DataLoader]:
        """Same as :meth:`val_dataloader`."""
        return self._eval_loaders()

    # ------------------------------------------------------------------------------------------------ saved splits
    def split_record(self) -> dict[str, Any]:
        """The split as a JSON-serialisable dict (``splits.json`` format)."""
        raw, split = self._require_setup()
        last = self._last_retain_sample
        return split_record(
            split,
            dataset=self.dataset_name,
            num_test=int(raw.test_targets.numel()),
            num_classes=self.num_classes,
            seed=self.seed,
            preset=self.preset,
            labelled_indices=self._labelled_indices.get(split.request),
            retain_sample_indices=last[1] if last is not None and last[0] == split.request else None,
        )

    def save_splits(self, path: str | Path) -> Path:
        """Write :meth:`split_record` as JSON to ``path`` (parents created); returns the path."""
        return write_splits(path, self.split_record())

    def _prepare_splits_file(self) -> None:
        trainer = self.trainer
        if trainer is None or not getattr(trainer, "loggers", None):
            return
        log_dir = self._trainer_attr("log_dir", None)  # collective: every rank asks
        if log_dir is None:
            return
        self._splits_path = Path(log_dir) / SPLITS_FILE
        self._write_splits_file()

    def _write_splits_file(self) -> None:
        if self._splits_path is None or not bool(self._trainer_attr("is_global_zero", True)):
            return
        self.save_splits(self._splits_path)
