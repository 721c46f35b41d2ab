"""``splits.json``: the record of exactly what a run forgot, written with the run and read back to restore it.

:func:`split_record` builds the JSON-serialisable record of a split (dataset, sizes, seed, preset, scenario,
forget indices and their SHA-256, noisy labels, continual requests, drawn subsets); :func:`write_splits` writes it;
:func:`restore_split` reads a saved file back into the same split (``Indices(split_file="splits.json")``), after
checking it against the dataset and its digests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_unlearn.datamodules.scenarios import RequestSplit, SplitResult, indices_sha256

if TYPE_CHECKING:
    from lightning_unlearn.datamodules.scenarios import Indices, SplitContext

SPLIT_FORMAT_VERSION = 1
#: File name of the record in a run's log directory.
SPLITS_FILE = "splits.json"

__all__ = ["SPLITS_FILE", "SPLIT_FORMAT_VERSION", "restore_split", "split_record", "write_splits"]


def split_record(
    split: SplitResult,
    *,
    dataset: str,
    num_test: int,
    num_classes: int,
    seed: int,
    preset: str,
    labelled_indices: Tensor | None = None,
    retain_sample_indices: Tensor | None = None,
) -> dict[str, Any]:
    """The ``splits.json`` record of ``split`` (active request applied).

    Args:
        split: The split.
        dataset: Dataset name (checked when the file is restored).
        num_test: Size of the test set.
        num_classes: Number of classes.
        seed: Split seed.
        preset: Quirk preset the split was drawn under.
        labelled_indices: The drawn ``retain_labelled`` subset, if any.
        retain_sample_indices: The drawn ``retain_sample`` subset, if any.

    Returns:
        A JSON-serialisable dict.
    """
    from lightning_unlearn import __version__

    forget = split.forget_indices
    record: dict[str, Any] = {
        "format_version": SPLIT_FORMAT_VERSION,
        "library_version": __version__,
        "dataset": dataset,
        "num_train": split.num_train,
        "num_test": num_test,
        "num_classes": num_classes,
        "seed": seed,
        "preset": preset,
        "scenario": split.scenario,
        "forget_indices": forget.tolist(),
        "forget_sha256": indices_sha256(forget),
        "retain_size": int(split.retain_indices.numel()),
        "test_forget_indices": None if split.test_forget_indices is None else split.test_forget_indices.tolist(),
        "noisy": None,
        "requests": None,
    }
    if split.noisy_labels is not None and split.clean_labels is not None:
        record["noisy"] = [
            [i, n, c]
            for i, n, c in zip(forget.tolist(), split.noisy_labels.tolist(), split.clean_labels.tolist(), strict=True)
        ]
    if split.continual:
        record["request"] = split.request
        record["requests"] = [
            {
                "type": r.scenario_type,
                "indices": r.forget_indices.tolist(),
                "sha256": indices_sha256(r.forget_indices),
                "test_forget_indices": None if r.test_forget_indices is None else r.test_forget_indices.tolist(),
            }
            for r in split.requests
        ]
    if labelled_indices is not None:
        record["labelled_indices"] = labelled_indices.tolist()
    if retain_sample_indices is not None:
        record["retain_sample_indices"] = retain_sample_indices.tolist()
    return record


def write_splits(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return out


def _tensor_or_none(values: Any) -> Tensor | None:
    return None if values is None else torch.tensor(list(values), dtype=torch.long)


def restore_split(scenario: Indices, ctx: SplitContext) -> SplitResult:
    """Read the ``splits.json`` of ``scenario.split_file`` back into the split it records.

    The file is checked against the dataset (name, ``N``, test size) and its digests before anything is trusted;
    every field is restored: noisy labels, the test forget set, continual requests and the drawn subsets.

    Raises:
        ValueError: Missing or invalid file, unsupported ``format_version``, another dataset, or a digest mismatch.
    """
    path = Path(str(scenario.split_file))
    if not path.is_file():
        raise ValueError(f"Indices: split_file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Indices: {str(path)!r} is not valid JSON: {err}") from err
    version = data.get("format_version")
    if version != SPLIT_FORMAT_VERSION:
        raise ValueError(f"Indices: {str(path)!r} has format_version {version!r}; supported: {SPLIT_FORMAT_VERSION}")
    saved_name = data.get("dataset")
    if ctx.info.name is not None and saved_name is not None and saved_name != ctx.info.name:
        raise ValueError(f"Indices: {str(path)!r} was saved for dataset {saved_name!r}, not {ctx.info.name!r}")
    if data.get("num_train") != ctx.num_train:
        raise ValueError(
            f"Indices: {str(path)!r} was saved for a training set of N={data.get('num_train')} samples, "
            f"this one has N={ctx.num_train}"
        )
    forget = torch.tensor(data["forget_indices"], dtype=torch.long)
    if indices_sha256(forget) != data.get("forget_sha256"):
        raise ValueError(f"Indices: forget_sha256 of {str(path)!r} does not match its forget_indices (digest mismatch)")
    if forget.numel() and (int(forget.min()) < 0 or int(forget.max()) >= ctx.num_train):
        raise ValueError(f"Indices: {str(path)!r} holds indices outside [0, {ctx.num_train})")
    num_test = None if ctx.test_targets is None else int(ctx.test_targets.numel())
    saved_test = data.get("num_test")
    if num_test is not None and saved_test is not None and saved_test != num_test:
        raise ValueError(
            f"Indices: {str(path)!r} was saved for {saved_test} test samples, this test set has {num_test}"
        )
    if num_test is None:
        num_test = saved_test
    requests_data = data.get("requests")
    request = 0
    if requests_data:
        reqs = []
        for t, entry in enumerate(requests_data):
            idx = torch.tensor(entry["indices"], dtype=torch.long)
            if indices_sha256(idx) != entry.get("sha256"):
                raise ValueError(f"Indices: digest mismatch for request {t} of {str(path)!r}")
            reqs.append(
                RequestSplit(
                    idx,
                    _tensor_or_none(entry.get("test_forget_indices")),
                    scenario_type=str(entry.get("type", "indices")),
                )
            )
        request = int(data.get("request", 0))
        requests = tuple(reqs)
        continual = True
    else:
        noisy = data.get("noisy")
        noisy_labels = clean_labels = None
        if noisy:
            rows = sorted(noisy)
            if [r[0] for r in rows] != forget.tolist():
                raise ValueError(f"Indices: the noisy entries of {str(path)!r} do not match its forget_indices")
            noisy_labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
            clean_labels = torch.tensor([r[2] for r in rows], dtype=torch.long)
        requests = (
            RequestSplit(
                forget,
                _tensor_or_none(data.get("test_forget_indices")),
                noisy_labels,
                clean_labels,
                scenario_type="indices",
            ),
        )
        continual = False
    return SplitResult(
        num_train=ctx.num_train,
        num_test=num_test,
        requests=requests,
        request=request,
        continual=continual,
        scenario={**scenario.record(), "restored": data.get("scenario")},
        labelled_indices=_tensor_or_none(data.get("labelled_indices")),
        retain_sample_indices=_tensor_or_none(data.get("retain_sample_indices")),
    )
