"""Scenarios: determinism, check values, sizes and contents, validation, YAML configuration."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from lightning_unlearn.datamodules import (
    CIFAR20_ALIASES,
    CIFAR20_FINE_CLASSES,
    CIFAR20_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_NAMES,
    ClassFraction,
    ClassRemoval,
    Continual,
    Indices,
    KInstances,
    NoisyLabels,
    RandomRemoval,
    Scenario,
    SubclassRemoval,
    floor_fraction,
    indices_sha256,
    take,
)

NAMES = tuple(f"c{i}" for i in range(10))


def cyclic(n: int, c: int = 10) -> torch.Tensor:
    return torch.arange(n) % c


# --------------------------------------------------------------------------------------------------- primitives
def test_take_precision_check_values():
    forget = take(1000, torch.arange(50_000), 420).sort().values.tolist()
    assert forget[:5] == [108, 154, 251, 333, 408]
    assert forget[-3:] == [49922, 49958, 49982]
    digest = hashlib.sha256(",".join(map(str, forget)).encode()).hexdigest()
    assert digest == "615040a1347c0f109bf4385d8126f90dffb403b6f37729c9c4799f96ecaaf38b"
    assert indices_sha256(forget) == digest
    # the same through the scenario, on a 50,000-element pool
    split = RandomRemoval(count=1000).split(cyclic(50_000), 10, seed=420)
    assert split.forget_sha256 == digest


def test_take_l2ul_draw_order_and_nesting():
    expected = [36044, 49165, 37807, 11341, 6091, 16904, 36293, 28026, 24681, 17849, 49031, 20152, 23932, 33744]
    expected += [8628, 3486]
    assert take(16, torch.arange(50_000), 0).tolist() == expected
    # equal to the global-RNG idiom of the reference code, without touching the global RNG
    state = torch.get_rng_state()
    torch.manual_seed(0)
    reference = torch.randperm(50_000)[:16].tolist()
    torch.set_rng_state(state)
    assert reference == expected
    # smaller draws are subsets of larger ones; pool order does not matter
    pool = torch.tensor([9, 3, 7, 1, 5])
    assert take(2, pool, 3).tolist() == take(4, pool.flip(0), 3)[:2].tolist()
    split = KInstances(16).split(cyclic(50_000), 10, seed=0)
    assert split.forget_indices.tolist() == sorted(expected)


def test_take_does_not_touch_global_rng():
    state = torch.get_rng_state()
    take(5, range(100), 1)
    ClassFraction({0: 0.5}).split(cyclic(100), 10, seed=3)
    assert torch.equal(state, torch.get_rng_state())


def test_floor_fraction_is_robust():
    assert floor_fraction(0.29, 100) == 29
    assert floor_fraction(0.6, 5923) == 3553
    assert floor_fraction(0.1, 9) == 0


# --------------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    "scenario",
    [RandomRemoval(fraction=0.2), KInstances(7), ClassFraction({1: 0.5, 3: 0.3}), NoisyLabels(rate=0.5)],
    ids=["random", "k_instance", "class_fraction", "noisy"],
)
def test_same_seed_same_split_different_seed_differs(scenario: Scenario):
    y = cyclic(200)
    a = scenario.split(y, 10, seed=5)
    b = scenario.split(y, 10, seed=5)
    c = scenario.split(y, 10, seed=6)
    assert torch.equal(a.forget_indices, b.forget_indices)
    assert not torch.equal(a.forget_indices, c.forget_indices)
    if a.noisy_labels is not None:
        assert b.noisy_labels is not None and torch.equal(a.noisy_labels, b.noisy_labels)


# --------------------------------------------------------------------------------------------------- catalogue
def test_class_removal():
    y, t = cyclic(100), cyclic(30)
    split = ClassRemoval([0, "c3"]).split(y, 10, NAMES, test_targets=t)
    assert split.forget_indices.tolist() == [i for i in range(100) if i % 10 in (0, 3)]
    assert split.retain_indices.tolist() == [i for i in range(100) if i % 10 not in (0, 3)]
    assert split.test_forget_indices is not None and split.test_retain_indices is not None
    assert split.test_forget_indices.tolist() == [j for j in range(30) if j % 10 in (0, 3)]
    assert split.test_retain_indices.tolist() == [j for j in range(30) if j % 10 not in (0, 3)]
    assert split.scenario == {"type": "class", "classes": [0, "c3"]}
    # names are case-insensitive; default is class 0
    assert ClassRemoval(["C3"]).split(y, 10, NAMES).forget_indices.tolist() == list(range(3, 100, 10))
    assert ClassRemoval().classes == (0,)
    # ids given as strings (JSON mapping keys) resolve when they are not names
    assert ClassFraction({"3": 0.5}).split(y, 10, NAMES).forget_indices.numel() == 5


def test_subclass_removal_on_cifar20_targets():
    fine = torch.arange(300) % 100
    coarse = torch.tensor(CIFAR100_FINE_TO_COARSE)[fine]
    fine_test = torch.arange(100)
    split = SubclassRemoval(["rocket", 51]).split(
        coarse,
        20,
        CIFAR20_NAMES,
        test_targets=torch.tensor(CIFAR100_FINE_TO_COARSE),
        fine_targets=fine,
        fine_test_targets=fine_test,
        fine_class_names=CIFAR100_NAMES,
        class_aliases=CIFAR20_ALIASES,
        dataset="cifar20",
    )
    assert split.forget_indices.tolist() == [51, 69, 151, 169, 251, 269]
    assert set(coarse[split.forget_indices].tolist()) == {4, 19}  # targets stay coarse
    assert split.test_forget_indices is not None and split.test_forget_indices.tolist() == [51, 69]
    assert split.test_retain_indices is not None and split.test_retain_indices.numel() == 98


def test_cifar20_fine_to_coarse_map_is_complete_and_sorted():
    assert CIFAR100_NAMES[69] == "rocket" and CIFAR100_FINE_TO_COARSE[69] == 19
    assert sorted(f for fines in CIFAR20_FINE_CLASSES for f in fines) == list(range(100))
    assert CIFAR20_NAMES[CIFAR20_ALIASES["vehicle2"]] == "vehicles_2"
    assert list(CIFAR100_NAMES) == sorted(CIFAR100_NAMES)
    assert list(CIFAR20_NAMES) == sorted(CIFAR20_NAMES)


def test_random_removal_sizes():
    y = cyclic(1000)
    assert RandomRemoval().split(y, 10).forget_indices.numel() == 100  # default fraction 0.1
    assert RandomRemoval(fraction=0.25).split(y, 10).forget_indices.numel() == 250
    split = RandomRemoval(count=83).split(y, 10, seed=4)
    assert split.forget_indices.numel() == 83 and split.retain_indices.numel() == 917
    assert split.test_forget_indices is None
    assert torch.equal(split.forget_indices, split.forget_indices.sort().values)


def test_k_instance_nested_across_k():
    y = cyclic(500)
    small = KInstances(16).split(y, 10, seed=0).forget_indices
    large = KInstances(64).split(y, 10, seed=0).forget_indices
    assert small.numel() == 16 and large.numel() == 64
    assert bool(torch.isin(small, large).all())
    assert KInstances(16).record() == {"type": "k_instance", "k": 16}


def test_class_fraction():
    y = cyclic(1000)  # 100 per class
    split = ClassFraction({5: 0.4, "c7": 0.25}).split(y, 10, NAMES, seed=0)
    labels = y[split.forget_indices]
    assert int((labels == 5).sum()) == 40 and int((labels == 7).sum()) == 25
    assert split.forget_indices.numel() == 65
    default = ClassFraction().split(y, 10, seed=0)
    assert default.forget_indices.numel() == 5 * 40
    assert set(y[default.forget_indices].tolist()) == {5, 6, 7, 8, 9}


def test_indices_list_and_text_file(tmp_path):
    y = cyclic(100)
    assert Indices([5, 1, 9]).split(y, 10).forget_indices.tolist() == [1, 5, 9]
    path = tmp_path / "forget_set.txt"
    path.write_text("3, 8\n 1 42,7\n")
    assert Indices(split_file=str(path)).split(y, 10).forget_indices.tolist() == [1, 3, 7, 8, 42]


def test_noisy_labels_uniform_other():
    y = cyclic(1000)
    split = NoisyLabels().split(y, 10, seed=0)
    assert split.is_noisy and split.noisy_labels is not None and split.clean_labels is not None
    assert split.forget_indices.numel() == 5 * 60
    assert set(y[split.forget_indices].tolist()) == {0, 1, 2, 3, 4}
    assert torch.equal(split.clean_labels, y[split.forget_indices])
    assert bool((split.noisy_labels != split.clean_labels).all())
    assert int(split.noisy_labels.max()) <= 9 and int(split.noisy_labels.min()) >= 0
    assert 9 in split.noisy_labels.tolist()  # the corrected range includes label 9
    noisy_targets = split.train_targets(y)
    assert torch.equal(noisy_targets[split.forget_indices], split.noisy_labels)
    assert torch.equal(noisy_targets[split.retain_indices], y[split.retain_indices])
    assert split.noisy_map()[int(split.forget_indices[0])] == int(split.noisy_labels[0])


def test_noisy_labels_laf_legacy_never_uses_nine():
    y = cyclic(2000)
    split = NoisyLabels(classes=list(range(10)), rate=1.0 - 1e-9, relabel="laf_legacy").split(y, 10, seed=1)
    assert split.noisy_labels is not None and split.clean_labels is not None
    assert 9 not in split.noisy_labels.tolist()
    assert bool((split.noisy_labels != split.clean_labels).all())
    # clean label 9 is relabelled into 0..8
    nines = split.clean_labels == 9
    assert bool(nines.any()) and int(split.noisy_labels[nines].max()) <= 8
    # the preset resolves relabel=None
    reference = NoisyLabels(classes=[8, 9], rate=1.0).split(y, 10, seed=1, preset="reference")
    assert reference.noisy_labels is not None and 9 not in reference.noisy_labels.tolist()


def test_continual_requests_are_disjoint_and_seeded():
    y = cyclic(400)
    scenario = Continual([ClassRemoval([1]), KInstances(10), ClassFraction({2: 0.5}), Indices([3, 13])])
    split = scenario.split(y, 10, seed=7)
    reqs = [r.forget_indices for r in split.requests]
    assert [r.numel() for r in reqs] == [40, 10, 20, 2]
    union = torch.cat(reqs)
    assert union.unique().numel() == union.numel()  # disjoint
    assert not bool(torch.isin(reqs[1], reqs[0]).any())
    # request 0 equals the single-request split
    assert torch.equal(reqs[0], ClassRemoval([1]).split(y, 10, seed=7).forget_indices)
    # request t is drawn with seed + t from the pool left by earlier requests
    pool = torch.tensor([i for i in range(400) if i % 10 != 1])
    assert reqs[1].tolist() == take(10, pool, 8).sort().values.tolist()
    at2 = split.for_request(2)
    assert torch.equal(at2.forget_indices, reqs[2])
    assert at2.previous_indices is not None
    assert at2.previous_indices.tolist() == torch.cat(reqs[:2]).sort().values.tolist()
    assert at2.retain_indices.numel() == 400 - 70
    assert split.previous_indices is None
    assert Continual().record()["requests"] == [{"type": "k_instance", "k": 16}] * 5


def test_scenarios_are_immutable_and_comparable():
    s = ClassRemoval([1, 2])
    with pytest.raises(AttributeError):
        s.classes = (3,)  # type: ignore[misc]
    assert s == ClassRemoval((1, 2)) and hash(s) == hash(ClassRemoval((1, 2)))
    assert s != ClassRemoval([2, 1]) and s != KInstances(2)
    assert "ClassRemoval" in repr(s)


# -------------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ClassRemoval([]), "empty"),
        (lambda: ClassRemoval([1, 1]), "duplicate"),
        (lambda: ClassRemoval([-1]), ">= 0"),
        (lambda: ClassRemoval([1.5]), "ids or names"),  # type: ignore[list-item]
        (lambda: SubclassRemoval([]), "empty"),
        (lambda: RandomRemoval(count=0), "integer >= 1"),
        (lambda: RandomRemoval(count=2.5), "integer >= 1"),  # type: ignore[arg-type]
        (lambda: RandomRemoval(fraction=0.0), r"\(0, 1\)"),
        (lambda: RandomRemoval(fraction=1.0), r"\(0, 1\)"),
        (lambda: RandomRemoval(fraction=0.1, count=3), "not both"),
        (lambda: KInstances(0), "integer >= 1"),
        (lambda: KInstances(True), "integer >= 1"),
        (lambda: ClassFraction({}), "non-empty"),
        (lambda: ClassFraction({1: 1.5}), r"\(0, 1\]"),
        (lambda: Indices(), "exactly one"),
        (lambda: Indices([]), "empty"),
        (lambda: Indices([1, 2, 2, 5, 5]), r"duplicate indices: 2, 5"),
        (lambda: Indices([-3]), ">= 0"),
        (lambda: NoisyLabels(rate=0.0), r"\(0, 1\]"),
        (lambda: NoisyLabels(rate=1.2), r"\(0, 1\]"),
        (lambda: NoisyLabels(relabel="shuffle"), "uniform_other"),  # type: ignore[arg-type]
        (lambda: Continual([]), "at least one"),
        (lambda: Continual([NoisyLabels()]), "allowed request types"),
        (lambda: Continual([Continual()]), "allowed request types"),
    ],
)
def test_construction_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("scenario", "match"),
    [
        (ClassRemoval([10]), r"unknown class id 10; allowed ids 0\.\.9"),
        (ClassRemoval(["zebra"]), r"unknown class name 'zebra'.*names \['c0'"),
        (ClassRemoval([3, "c3"]), "duplicate classes"),
        (ClassRemoval(list(range(10))), "empty retain"),
        (SubclassRemoval(["rocket"]), "only available on dataset 'cifar20'"),
        (RandomRemoval(fraction=0.001), "rounds to an empty forget set"),
        (RandomRemoval(count=100), "retain set would be empty"),
        (KInstances(500), "retain set would be empty"),
        (ClassFraction({1: 0.05}), "rounds to 0"),
        (Indices([3, 100, 250]), r"out of range \[0, 100\): 100, 250"),
        (Indices(list(range(100))), "empty retain"),
        (NoisyLabels(relabel="laf_legacy"), "needs >= 9 classes"),
        (Continual([ClassRemoval([1]), ClassRemoval([1])]), "request 1.*overlapping requests"),
        (Continual([Indices([1, 2]), Indices([2, 3])]), r"request 1.*overlapping requests\): 2"),
        (Continual([KInstances(50), KInstances(50)]), "request 1.*retain set would be empty"),
    ],
)
def test_split_errors(scenario, match):
    num_classes = 8 if isinstance(scenario, NoisyLabels) else 10
    names = NAMES[:num_classes]
    with pytest.raises(ValueError, match=match):
        scenario.split(cyclic(100, num_classes), num_classes, names)


def test_class_without_samples_and_seed_errors():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="class 5 .*has no training sample"):
        ClassRemoval([5]).split(y, 10, NAMES)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        KInstances(1).split(y, 10, seed=-1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        NoisyLabels(classes=[0], rate=0.5).split(torch.zeros(10, dtype=torch.long), 1)


def test_split_file_mismatches(tmp_path):
    y = cyclic(100)
    record = {
        "format_version": 1,
        "dataset": "toy",
        "num_train": 100,
        "forget_indices": [1, 2],
        "forget_sha256": indices_sha256([1, 2]),
    }
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(record))
    assert Indices(split_file=str(path)).split(y, 10, dataset="toy").forget_indices.tolist() == [1, 2]
    with pytest.raises(ValueError, match="saved for dataset 'toy', not 'mnist'"):
        Indices(split_file=str(path)).split(y, 10, dataset="mnist")
    with pytest.raises(ValueError, match="N=100"):
        Indices(split_file=str(path)).split(cyclic(90), 10, dataset="toy")
    path.write_text(json.dumps({**record, "forget_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="digest mismatch"):
        Indices(split_file=str(path)).split(y, 10, dataset="toy")
    with pytest.raises(ValueError, match="does not exist"):
        Indices(split_file=str(tmp_path / "missing.txt")).split(y, 10)


# --------------------------------------------------------------------------------------------------- YAML / CLI
def test_scenarios_from_lightning_cli_yaml(tmp_path):
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    class TinyModel(LightningModule):
        def __init__(self, width: int = 2) -> None:
            super().__init__()

    config = """
data:
  class_path: lightning_unlearn.datamodules.MNIST5kDataModule
  init_args:
    seed: 3
    scenario:
      class_path: lightning_unlearn.datamodules.Continual
      init_args:
        requests:
          - class_path: lightning_unlearn.datamodules.ClassRemoval
            init_args: {classes: [0, "7"]}
          - class_path: lightning_unlearn.datamodules.ClassFraction
            init_args: {fractions: {1: 0.5, "2": 0.25}}
          - class_path: lightning_unlearn.datamodules.KInstances
            init_args: {k: 16}
"""
    path = tmp_path / "config.yaml"
    path.write_text(config)
    cli = LightningCLI(
        TinyModel,
        LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(path), "--trainer.logger=false"],
        seed_everything_default=False,
    )
    dm = cli.datamodule
    assert dm.seed == 3
    scenario = dm.scenario
    assert isinstance(scenario, Continual)
    # quoted digits are coerced to class ids by the parser (the names of digit classes are the digits)
    assert scenario.requests == (ClassRemoval([0, 7]), ClassFraction({1: 0.5, "2": 0.25}), KInstances(16))

    simple = tmp_path / "simple.yaml"
    simple.write_text(
        "data:\n  class_path: lightning_unlearn.datamodules.MNIST5kDataModule\n  init_args:\n    scenario:\n"
        "      class_path: lightning_unlearn.datamodules.ClassRemoval\n      init_args: {classes: [0]}\n"
    )
    cli = LightningCLI(
        TinyModel,
        LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(simple)],
        seed_everything_default=False,
    )
    assert cli.datamodule.scenario == ClassRemoval([0])
    # validation errors surface at construction through the CLI too
    bad = tmp_path / "bad.yaml"
    bad.write_text(simple.read_text().replace("[0]", "[12]"))
    with pytest.raises((ValueError, SystemExit)):
        LightningCLI(
            TinyModel,
            LightningDataModule,
            subclass_mode_data=True,
            run=False,
            args=["--config", str(bad)],
            seed_everything_default=False,
        )
