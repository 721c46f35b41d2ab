"""One rank of a direct ``torch.distributed`` (gloo) test of the metrics, without Lightning.

Run one process per rank: ``python ddp_raw_metric_script.py --rank R --world-size N --port P --out PREFIX``;
each rank writes ``PREFIX.R`` (JSON). Metrics are fed unevenly: one attack only on rank 0 (the other ranks have no
samples at all), one on interleaved shards with the forget split fed on every rank (duplicates to drop), one that
never sees the test split (the attack fails on rank 0; the other ranks must raise instead of hanging).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

NUM_CLASSES = 3


def attack_arrays(seed: int = 3) -> dict[str, tuple[Tensor, Tensor]]:
    """Random logits and labels per split: ``{split: (logits, target)}``."""
    generator = torch.Generator().manual_seed(seed)
    arrays = {}
    for name, size, scale in (("forget", 11, 3.0), ("retain", 23, 4.0), ("test", 17, 1.0)):
        logits = torch.randn(size, NUM_CLASSES, generator=generator) * scale
        arrays[name] = (logits, torch.randint(0, NUM_CLASSES, (size,), generator=generator))
    return arrays


def run(rank: int, world_size: int) -> dict[str, Any]:
    from lightning_unlearn.metrics import EntropyMIA, SplitAccuracy

    arrays = attack_arrays()
    lopsided, accuracy = EntropyMIA(), SplitAccuracy()
    shuffled = EntropyMIA()
    missing = EntropyMIA()
    for name, (logits, target) in arrays.items():
        index = torch.arange(len(target))
        if rank == 0:
            lopsided.update(name, logits, target, index)
            accuracy.update(logits, target)
        shard = slice(None) if name == "forget" else slice(rank, None, world_size)
        shuffled.update(name, logits[shard].flip(0), target[shard].flip(0), index[shard].flip(0))
        if name != "test":
            missing.update(name, logits[shard], target[shard], index[shard])
    values: dict[str, Any] = {
        "lopsided": float(lopsided.compute()),
        "shuffled": float(shuffled.compute()),
        "accuracy": float(accuracy.compute()),
    }
    try:
        missing.compute()
        values["missing"] = "no error"
    except Exception as exc:
        values["missing"] = type(exc).__name__
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--port", type=int, default=29533)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.world_size > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank, world_size=args.world_size
        )
    values = run(args.rank, args.world_size)
    with open(f"{args.out}.{args.rank}", "w") as handle:
        json.dump(values, handle)
    if dist.is_initialized():
        dist.barrier()
        # Leave without tearing gloo down: its teardown can abort ("terminate called without an active
        # exception") when the peer exits first, which would fail the run after the values were written.
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
