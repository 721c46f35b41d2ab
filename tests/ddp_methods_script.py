"""Run method configs with 2 CPU processes (``strategy=ddp_fork``) through the CLI; used by ``test_ddp_methods.py``.

``python ddp_methods_script.py --out DIR NAME [NAME ...]`` prepares each method's tiny config (as the reliability
matrix does) under ``DIR/NAME``, fits it on 2 processes and writes ``DIR/NAME/result.json`` (world size, epochs,
logged metrics). The unlearned classifier is ``DIR/NAME/ddp/classifier.pt``. One Python process runs every
config, so the interpreter starts once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_reliability import _prepare  # noqa: E402
from trainers import exit_without_teardown  # noqa: E402

from lightning_unlearn.main import main as cli_main  # noqa: E402

#: Methods whose statistics pass must give the same edit on 1 and 2 processes: they read every training batch.
STATISTICS = ("SSD", "LFSSD", "ActivationReset", "Pruning", "PruningLast", "PruningComplex")
#: Of those, the methods whose edit comes from overfit copies trained on global batches; their finetune stage is
#: dropped (``retain_epochs: 0``) so that the saved classifier is the edit itself.
OVERFIT_EDITS = ("Pruning", "PruningLast", "PruningComplex", "PruningLastBatchOfOne")
#: Extra runs: ``name: (matrix method, data overrides)``. 400 forget samples in batches of 133 end with a batch of
#: one sample, so one of the two ranks has an empty share of it.
EXTRA = {"PruningLastBatchOfOne": ("Pruning", {"batch_size": 133})}


def prepare(name: str, folder: Path) -> Path:
    """The tiny config of ``name`` (statistics methods see all their batches) under ``folder``."""
    import yaml

    method, data = EXTRA.get(name, (name, {}))
    config, _ = _prepare(method, folder)
    if name in STATISTICS or name in OVERFIT_EDITS:
        cfg = yaml.safe_load(config.read_text())
        cfg["trainer"]["limit_train_batches"] = 1.0
        cfg["data"]["init_args"].update(data)
        if name in OVERFIT_EDITS:
            cfg["model"]["init_args"]["retain_epochs"] = 0
            cfg["trainer"].pop("max_epochs", None)  # the method's budget (its remaining stages) sets it
        config.write_text(yaml.safe_dump(cfg))
    if name == "SalUn":  # the saliency pass reads every forget batch; one unlearning epoch after it
        cfg = yaml.safe_load(config.read_text())
        cfg["trainer"]["limit_train_batches"] = 1.0
        cfg["trainer"].pop("max_epochs", None)  # saliency + 1 epoch: the method's budget
        cfg["model"]["init_args"]["epochs"] = 1
        config.write_text(yaml.safe_dump(cfg))
    return config


def run(name: str, out: Path) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    config = prepare(name, folder)
    cli = cli_main(
        [
            "fit",
            "--config",
            str(config),
            f"--trainer.default_root_dir={folder / 'ddp'}",
            "--trainer.devices=2",
            "--trainer.strategy=ddp_fork",
        ]
    )
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    result = {"world_size": cli.trainer.world_size, "config": str(config), "metrics": metrics}
    (folder / "result.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    for name in args.names:
        run(name, Path(args.out))


if __name__ == "__main__":
    main()
    exit_without_teardown()
