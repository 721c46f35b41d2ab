"""A quiet CPU ``Trainer`` for tests: no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, Trainer


def quiet_trainer(tmp_path: Any, **overrides: Any) -> Trainer:
    """One-epoch CPU trainer writing only under ``tmp_path``; ``overrides`` replace any option."""
    options: dict[str, Any] = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    options.update(overrides)
    return Trainer(**options)


def run_on_1_and_2_processes(script: Any, tmp_path: Any, *extra: str) -> tuple[dict, dict]:
    """Run ``script --devices N --out ... --logdir ... *extra`` for N = 1 and 2; return the two JSON results.

    Both runs use one thread per process, so float reductions see the same arithmetic.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo_root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    env.pop("MASTER_PORT", None)
    procs = {}
    for devices in (1, 2):
        cmd = [sys.executable, str(script), "--devices", str(devices), *extra]
        out_file, log_dir = Path(tmp_path) / f"values{devices}.json", Path(tmp_path) / f"logs{devices}"
        cmd += ["--out", str(out_file), "--logdir", str(log_dir)]
        procs[devices] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for proc in procs.values():
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out.decode()[-4000:]
    one, two = (json.loads((Path(tmp_path) / f"values{n}.json").read_text()) for n in (1, 2))
    return one, two


def exit_without_teardown() -> None:
    """End a multi-process test script once its results are written.

    The gloo process group's teardown at interpreter exit can abort ("terminate called without an active
    exception") when a peer exits first, failing a run whose results are already on disk.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAt` to stop a run as a killed process would (no further hook runs)."""


class CrashAt(Callback):
    """Raises :class:`SimulatedCrash` before training batch ``batch`` of epoch ``epoch`` (a killed run).

    With ``batch >= 1`` the crash comes in the middle of the epoch, after some of its steps were taken.
    """

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedCrash(f"simulated crash at epoch {self.epoch}, batch {self.batch}")
