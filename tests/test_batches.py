"""Named batches: the library's loaders yield LabelledBatch / LabelledPair / UnlabelledBatch, read by field."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, default_collate
from trainers import quiet_trainer

from lightning_unlearn.callbacks.retrain_comparison import RetrainComparison
from lightning_unlearn.datamodules import (
    ClassRemoval,
    LabelledBatch,
    LabelledPair,
    RandomRemoval,
    UnlabelledBatch,
    unpack_batch,
)
from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods import LFSSD, SSD, BadTeaching, Finetune
from lightning_unlearn.methods.bad_teaching import _UNION
from lightning_unlearn.methods.base import Stage, UnlearningMethod
from lightning_unlearn.methods.ssd import GlobalBatches
from lightning_unlearn.models import load_classifier

KINDS = [
    (True, True, LabelledBatch),
    (True, False, LabelledPair),
    (False, True, UnlabelledBatch),
    (False, False, torch.Tensor),
]


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def toy(**kwargs: Any) -> ToyDataModule:
    dm = ToyDataModule(**{"scenario": ClassRemoval(classes=[0]), "batch_size": 16, **kwargs})
    dm.setup("fit")
    return dm


def assert_same_batch(actual: Any, expected: Any) -> None:
    assert type(actual) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected)
        return
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and torch.equal(a, e)


# ------------------------------------------------------------------------------------------------ element types
@pytest.mark.parametrize(("labelled", "with_index", "kind"), KINDS)
def test_split_datasets_and_their_loaders_yield_the_named_type(labelled, with_index, kind):
    dm = toy()
    dataset = dm.split_dataset("forget", labelled=labelled, with_index=with_index)
    element = dataset[3]
    assert isinstance(element, kind)
    x, y, index = unpack_batch(element)
    assert (y is not None) == labelled and (index is not None) == with_index
    assert int(round(float(x[0, 0, 0]) * 255)) == int(dm.forget_indices[3])  # the toy pixel encodes the row
    if labelled:
        assert int(y) == int(dm.split_targets("forget")[3])
    if with_index:
        assert int(index) == 3
    # the batched read (__getitems__) builds the same elements as one-by-one indexing
    for got, want in zip(dataset.__getitems__([0, 3, 5]), [dataset[0], dataset[3], dataset[5]], strict=True):
        assert_same_batch(got, want)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert isinstance(batch, kind)  # default_collate keeps the named type
    assert_same_batch(batch, default_collate([dataset[i] for i in range(4)]))


def test_evaluation_loaders_yield_labelled_batches_equal_to_the_items_by_index():
    dm = toy(eval_batch_size=7)
    for name, loader in dm.val_dataloader().items():
        dataset = dm.split_dataset(name, labelled=True, with_index=True)
        seen = 0
        for batch in loader:
            assert isinstance(batch, LabelledBatch)
            assert_same_batch(batch, default_collate([dataset[int(i)] for i in batch.index]))
            seen += len(batch.index)
        assert seen == len(dataset), name


@pytest.mark.parametrize(
    ("labelled", "with_index", "kind"),
    [(True, True, LabelledBatch), (True, False, LabelledPair), (False, True, UnlabelledBatch), (False, False, None)],
)
def test_training_phases_yield_the_named_type(labelled, with_index, kind):
    dm = toy()
    dm.set_train_plan([Phase(epochs=1, splits=("forget", "retain"), labelled=labelled, with_index=with_index)])
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"forget", "retain"}
    for part in batch.values():
        assert isinstance(part, kind or torch.Tensor) and (kind is None or type(part) is kind)


def test_retain_labelled_is_labelled_in_a_label_free_phase_and_pretraining_yields_pairs():
    dm = toy()
    dm.set_train_plan([Phase(epochs=1, splits=("retain_labelled",), labelled=False)])
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert type(batch["retain_labelled"]) is LabelledPair
    for mode in ("pretrain", "retrain"):
        assert type(next(iter(toy(mode=mode).train_dataloader()))) is LabelledPair


# ------------------------------------------------------------------------------------------------ reading batches
def test_split_batch_reads_named_batches_by_field():
    x, y, i = torch.rand(4, 1, 4, 4), torch.arange(4), torch.arange(10, 14)
    read = UnlearningMethod.split_batch
    assert read(UnlabelledBatch(x, i)) == (x, None, i)  # not (x, y=i): the old positional reading of a pair
    assert read(LabelledBatch(x, y, i)) == (x, y, i)
    assert read(LabelledPair(x, y)) == (x, y, None)
    assert read(x) == (x, None, None)
    with pytest.raises(RuntimeError, match="needs labelled batches"):
        UnlearningMethod.labelled_batch(UnlabelledBatch(x, i))
    with pytest.raises(RuntimeError, match="needs labelled batches"):
        UnlearningMethod.labelled_batch(x)


def test_plain_tuples_and_lists_from_a_user_datamodule_keep_the_positional_convention():
    x, y, i = torch.rand(4, 1, 4, 4), torch.arange(4), torch.arange(10, 14)
    read = UnlearningMethod.split_batch
    assert read([x, y]) == (x, y, None)  # default_collate turns plain tuples into lists
    assert read((x, y)) == (x, y, None)  # a plain pair is always (x, y), never guessed to be (x, index)
    assert read([x, y, i]) == (x, y, i)
    assert read([x]) == (x, None, None)
    for bad in ([x, y, i, i], [], {"x": x}, "x"):
        with pytest.raises(TypeError, match=r"\(x, y\) or \(x, y, index\)"):
            read(bad)


def test_eval_step_uses_the_batch_index_or_positions_for_a_plain_pair():
    method = Finetune(tiny_model())
    x, y, i = torch.rand(3, 1, 4, 4), torch.tensor([1, 2, 3]), torch.tensor([7, 8, 9])
    out = method.validation_step(LabelledBatch(x, y, i), 0)
    assert torch.equal(out["index"], i) and torch.equal(out["target"], y)
    assert torch.equal(out["logits"], method(x).detach())
    out = method.validation_step([x, y], 0)
    assert torch.equal(out["index"], torch.arange(3)) and torch.equal(out["target"], y)
    with pytest.raises(RuntimeError, match="needs labelled batches"):
        method.validation_step(UnlabelledBatch(x, i), 0)


def test_retrain_comparison_reads_the_input_field():
    x, y, i = torch.rand(3, 1, 4, 4), torch.arange(3), torch.arange(3)
    assert RetrainComparison._inputs(LabelledBatch(x, y, i)) is x
    assert RetrainComparison._inputs([x, y, i]) is x
    assert RetrainComparison._inputs(x) is x
    with pytest.raises(TypeError, match="RetrainComparison needs evaluation batches"):
        RetrainComparison._inputs({"x": x})


@pytest.mark.parametrize(("labelled", "kind"), [(True, LabelledPair), (False, torch.Tensor)])
def test_global_batches_keep_the_named_type_also_for_an_empty_shard(labelled, kind):
    dm = toy()
    helper = GlobalBatches(dm, "forget", labelled, batch_size=8, rank=3, world_size=4)
    assert [len(shard) for shard in helper.shards] == [2, 0]  # 10 samples, B=8: the last batch has 2, rank 3 none
    full = helper.batch(0, torch.device("cpu"))
    empty = helper.batch(1, torch.device("cpu"))
    assert isinstance(full, kind) and isinstance(empty, kind)
    assert len(unpack_batch(full)[0]) == 2 and len(unpack_batch(empty)[0]) == 0
    assert unpack_batch(empty)[0].shape[1:] == unpack_batch(full)[0].shape[1:]
    dataset = dm.split_dataset("forget", labelled=labelled)
    assert_same_batch(full, default_collate([dataset[i] for i in helper.shards[0]]))


# ------------------------------------------------------------------------------------------------ whole fits
class BatchRecorder(Callback):
    """Checks every training batch against the dataset items of its split (matched by the toy's pixel code)."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[type]] = {}
        self.samples = 0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        dm = trainer.datamodule
        _, phase = dm.current_phase()
        labelled = dm.labelled if phase.labelled is None else phase.labelled
        for name, part in batch.items():
            if part is None:  # CombinedLoader(mode="max_size"): this split is exhausted
                continue
            self.kinds.setdefault(name, set()).add(type(part))
            dataset = dm.split_dataset(
                name,
                labelled=labelled or name == "retain_labelled",
                with_index=phase.with_index,
                augment=dm.augment_unlearning,
                sample_size=phase.sample_size,
            )
            rows = torch.round(unpack_batch(part)[0][:, 0, 0, 0] * 255).long()
            where = {int(p): j for j, p in enumerate(dataset.positions)}
            positions = [where[int(r)] for r in rows]
            index = unpack_batch(part)[2]
            if index is not None:
                assert index.tolist() == positions
            assert_same_batch(part, default_collate([dataset[j] for j in positions]))
            self.samples += len(positions)


@pytest.mark.parametrize(
    ("make", "kinds"),
    [
        (lambda: Finetune(tiny_model(), lr=0.01), {"retain": {LabelledPair}}),
        (
            lambda: SSD(tiny_model(), alpha=1.0, importance_batch_size=8),
            {"forget": {LabelledPair}, "retain+forget": {LabelledPair}},
        ),
        (
            lambda: LFSSD(tiny_model(), alpha=1.0, importance_batch_size=8),
            {"forget": {torch.Tensor}, "retain+forget": {torch.Tensor}},
        ),
        (lambda: BadTeaching(tiny_model(), batch_size=16, retain_fraction=0.3), {_UNION: {UnlabelledBatch}}),
    ],
    ids=["Finetune", "SSD", "LFSSD", "BadTeaching"],
)
def test_a_fit_receives_exactly_the_dataset_items(make, kinds, tmp_path):
    recorder = BatchRecorder()
    dm = ToyDataModule(scenario=RandomRemoval(count=12), batch_size=8)
    trainer = quiet_trainer(tmp_path, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(make(), datamodule=dm)
    assert recorder.samples > 0
    assert recorder.kinds == kinds


# ------------------------------------------------------------------------------------------------ shared checks
def test_stage_epochs_refuses_bools_with_the_integer_message():
    with pytest.raises(ValueError, match=r"Stage 'a': epochs must be an integer >= 0, got True"):
        Stage("a", True)
    with pytest.raises(ValueError, match=r"Stage 'a': epochs must be an integer >= 0, got -1"):
        Stage("a", -1)
    assert Stage("a", 0).epochs == 0


def test_ssd_refuses_a_bool_importance_batch_size():
    with pytest.raises(ValueError, match="importance_batch_size must be an integer >= 1, got True"):
        SSD(tiny_model(), importance_batch_size=True)


def test_method_generator_equals_a_hand_seeded_generator():
    method = Finetune(tiny_model())
    got = torch.randint(0, 1000, (5,), generator=method.method_generator(3))
    assert torch.equal(got, torch.randint(0, 1000, (5,), generator=torch.Generator().manual_seed(3)))
