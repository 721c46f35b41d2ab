"""Many independent training jobs in parallel processes, resumable, with a progress bar.

Used by the privacy audit and the benchmark: each job writes one result file, and a job whose result file exists
is not run again, so an interrupted command picks up where it stopped. Jobs run in ``workers`` spawned processes;
each process gets an equal share of the CPU threads and, when CUDA devices are visible, one device (round robin),
so models train in parallel over the available processes and devices.

With ``engine="ray"`` each job becomes a Ray task (``num_cpus`` threads, one GPU where CUDA is visible) on a local
Ray instance or the cluster at ``ray_address`` (``"auto"``, ``"ray://host:10001"``); results and resume are the same
as locally, provided the result paths are on a filesystem every node sees. :func:`use_engine` sets the engine of
every :func:`run_jobs` call inside it (the commands' ``--ray-address``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lightning_unlearn.validation import check_integer

__all__ = [
    "ENGINES",
    "Job",
    "JobError",
    "cli_fit",
    "default_workers",
    "engine_from_address",
    "import_class",
    "quiet_output",
    "run_jobs",
    "takes_seed",
    "use_engine",
]

#: Execution engines of :func:`run_jobs`.
ENGINES = ("local", "ray")
_ENGINE: dict[str, Any] = {"engine": "local", "ray_address": None}


@dataclass(frozen=True)
class Job:
    """One unit of work: ``function(*args)`` must write ``result`` (a file) when it succeeds.

    Args:
        name: Short name shown in the progress bar and in errors.
        result: The file the job writes last; its existence marks the job done.
        function: A module-level (picklable) function.
        args: Its positional arguments (picklable).
        log: File receiving the job's stdout and stderr; ``None``: ``result`` with the suffix ``.log``.
    """

    name: str
    result: Path
    function: Callable[..., None]
    args: tuple[Any, ...] = field(default_factory=tuple)
    log: Path | None = None

    @property
    def log_file(self) -> Path:
        """Where the job's output goes."""
        return self.log if self.log is not None else self.result.with_suffix(".log")


class JobError(RuntimeError):
    """A job failed; the message names it and ends with the tail of its log."""


def default_workers() -> int:
    """One worker per CUDA device when there are several, else up to 2 CPU workers (never more than the cores)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return int(torch.cuda.device_count())
    return max(1, min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def use_engine(engine: str = "local", ray_address: str | None = None) -> Iterator[None]:
    """Make ``engine`` (and ``ray_address``) the default of every :func:`run_jobs` call inside the block.

    Raises:
        ValueError: If ``engine`` is not one of :data:`ENGINES`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    saved = dict(_ENGINE)
    _ENGINE.update(engine=engine, ray_address=ray_address)
    try:
        yield
    finally:
        _ENGINE.clear()
        _ENGINE.update(saved)


def add_ray_address_argument(parser: Any, what: str) -> None:
    """Add the ``--ray-address`` option of the many-job commands (``what``: the jobs it runs, for the help)."""
    parser.add_argument(
        "--ray-address",
        default=None,
        help=f"run {what} as Ray tasks on this cluster (auto, ray://host:10001; 'local' starts one here)",
    )


def engine_from_address(ray_address: str | None) -> contextlib.AbstractContextManager[None]:
    """The engine of a command's ``--ray-address`` (a context manager, see :func:`use_engine`).

    ``None``: local processes; ``"local"``: a Ray instance started on this machine; any other value (``"auto"``,
    ``"ray://host:10001"``): the Ray cluster at that address.
    """
    if ray_address is None:
        return use_engine("local")
    return use_engine("ray", None if ray_address == "local" else ray_address)


def run_jobs(
    jobs: Sequence[Job],
    workers: int = 1,
    description: str = "jobs",
    console: Console | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    num_cpus: float | None = None,
    progress: bool = True,
) -> list[Path]:
    """Run the jobs whose result is missing, ``workers`` at a time, and return every job's result path.

    Args:
        jobs: The jobs (their result files must be distinct).
        workers: Parallel processes (Ray: tasks in flight); 1 runs the jobs in this process locally (no spawn
            overhead, easy debugging).
        description: Label of the progress bar.
        console: Console of the progress bar.
        engine: ``"local"`` (spawned processes) or ``"ray"`` (one Ray task per job); ``None``: the engine set by
            :func:`use_engine` (default ``"local"``).
        ray_address: Ray cluster to join (``"auto"``, ``"ray://host:port"``); ``None``: the :func:`use_engine`
            address, else a Ray instance already initialised in this process, else a new local one.
        num_cpus: CPUs of each Ray task (default: this machine's cores divided by ``workers``).
        progress: Show a progress bar.

    Raises:
        ValueError: If ``workers < 1``, two jobs share a result file or the engine is unknown.
        JobError: When a job fails or does not write its result (the other running jobs finish first).
        ImportError: With ``engine="ray"`` when Ray is not installed.
    """
    check_integer("workers", workers, 1)
    engine = engine if engine is not None else str(_ENGINE["engine"])
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    ray_address = ray_address if ray_address is not None else _ENGINE["ray_address"]
    results = [job.result for job in jobs]
    if len(set(results)) != len(results):
        raise ValueError("every job needs its own result file")
    pending = [job for job in jobs if not job.result.exists()]
    console = console or Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not progress) as bar:
        task = bar.add_task(description, total=len(jobs), completed=len(jobs) - len(pending))
        if engine == "ray":
            if pending:
                _run_ray(pending, workers, lambda: bar.advance(task), ray_address, num_cpus)
            return results
        if workers == 1 or len(pending) <= 1:
            for job in pending:
                _run_one(job)
                _check_result(job)
                bar.advance(task)
            return results
        _run_parallel(pending, min(workers, len(pending)), lambda: bar.advance(task))
    return results


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "the Ray engine needs Ray: pip install 'lightning-unlearn[ray]' (or pip install 'ray[default]')"
        ) from error
    return ray


def _run_ray(
    pending: Sequence[Job],
    workers: int,
    advance: Callable[[], None],
    address: str | None,
    num_cpus: float | None,
) -> None:
    """One Ray task per job, at most ``workers`` in flight; the first failure stops queueing, like the pool."""
    import torch

    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    cpus = num_cpus if num_cpus is not None else max(1.0, float((os.cpu_count() or 1) // workers))
    task = ray.remote(num_cpus=cpus, num_gpus=1 if torch.cuda.is_available() else 0, max_retries=0)(_ray_task)
    failure: JobError | None = None
    try:
        queue = list(pending)
        running: dict[Any, Job] = {}
        while queue or running:
            while queue and len(running) < workers and failure is None:
                job = queue.pop(0)
                running[task.remote(job, cpus)] = job
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                job = running.pop(ref)
                try:
                    ray.get(ref)
                    _check_result(job)
                except JobError as error:
                    failure = failure or error
                except Exception as error:  # the task raised (RayTaskError wraps the JobError) or its worker died
                    cause = getattr(error, "cause", None)
                    failure = failure or (
                        cause if isinstance(cause, JobError) else JobError(f"job {job.name!r} failed: {error!r}")
                    )
                else:
                    advance()
            if failure is not None:
                queue.clear()
    finally:
        if started:
            ray.shutdown()
    if failure is not None:
        raise failure


def _ray_task(job: Job, cpus: float) -> None:
    """A Ray task: the job with the task's CPU share as threads (Ray sets the visible GPU)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    _run_one(job)


def _run_parallel(pending: Sequence[Job], workers: int, advance: Callable[[], None]) -> None:
    context = multiprocessing.get_context("spawn")  # CUDA-safe, and no inherited state
    slots = context.Queue()
    for slot in range(workers):
        slots.put((slot, workers))
    failure: JobError | None = None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(slots,)) as pool:
        queue = list(pending)
        running: dict[Future[None], Job] = {}
        while queue or running:
            while queue and len(running) < workers and failure is None:
                job = queue.pop(0)
                running[pool.submit(_run_one, job)] = job
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    future.result()
                    _check_result(job)
                except JobError as error:
                    failure = failure or error
                except Exception as error:  # a worker that died (e.g. out of memory)
                    failure = failure or JobError(f"job {job.name!r} failed: {error!r}{_log_tail(job)}")
                else:
                    advance()
            if failure is not None:
                queue.clear()
    if failure is not None:
        raise failure


def _init_worker(slots: Any) -> None:
    """Give this worker its share of the threads and, with CUDA, one device."""
    slot, workers = slots.get()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if torch.cuda.is_available():
        torch.cuda.set_device(slot % torch.cuda.device_count())


def _run_one(job: Job) -> None:
    job.log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_output(job.log_file):
            job.function(*job.args)
    except Exception as error:
        with open(job.log_file, "a") as handle:
            traceback.print_exc(file=handle)
        raise JobError(f"job {job.name!r} failed: {error!r}{_log_tail(job)}") from error


def _check_result(job: Job) -> None:
    if not job.result.exists():
        raise JobError(f"job {job.name!r} finished without writing {job.result}{_log_tail(job)}")


def _log_tail(job: Job, lines: int = 15) -> str:
    try:
        tail = job.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {job.log_file} ---\n" + "\n".join(tail)


@contextlib.contextmanager
def quiet_output(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also C code and loggers) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def import_class(class_path: str) -> type:
    """The class named by a ``class_path`` (``"package.module.Name"``)."""
    import importlib

    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def takes_seed(cls: type) -> bool:
    """Whether ``cls`` (e.g. a method class) takes a ``seed`` argument, which a job then sets to its own seed."""
    import inspect

    return "seed" in inspect.signature(cls).parameters


def cli_fit(configs: Sequence[str], overrides: Sequence[str], run_dir: Path) -> Any:
    """Run ``lightning-unlearn fit`` in this process with logs and checkpoints under ``run_dir``.

    No logger and no progress bar; the library's callbacks (metrics, cost, ``ModelCheckpoint(save_last=True)``)
    stay. When ``run_dir/checkpoints/last.ckpt`` exists (an interrupted run), the fit resumes from it.

    Args:
        configs: Config files, composed in order.
        overrides: Further ``--key=value`` arguments.
        run_dir: The run's folder (``default_root_dir``).

    Returns:
        The CLI object (``.model``, ``.trainer``, ``.datamodule``).
    """
    from lightning_unlearn.main import UnlearnCLI

    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    args += [
        "--trainer.logger=false",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *overrides,
    ]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        args.append(f"--ckpt_path={last}")
    argv = sys.argv
    sys.argv = argv[:1]  # the calling command's own arguments are not this run's
    try:
        return UnlearnCLI(args=args)
    finally:
        sys.argv = argv
