"""LAF and LAF+R: label-agnostic forgetting (Shen et al., ICLR 2024).

Pure loss functions (:func:`vae_loss`, :func:`bounded_error`, :func:`ue_loss`, :func:`ra_loss`) and the
multi-stage method :class:`LAF` (``repair=True`` is LAF+R).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.batches import unpack_batch
from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    MultiStageUnlearningMethod,
    Stage,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.models.cut import head_parameters, resolve_head_name
from lightning_unlearn.models.vae import RepresentationVAE
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import is_integer

__all__ = ["LAF", "bounded_error", "ra_loss", "ue_loss", "vae_loss", "vae_loss_terms"]

_COS_EPS = 1e-12
_LOGVAR_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------- losses
def vae_loss_terms(
    recon: Tensor, e: Tensor, mu: Tensor, sigma: Tensor, kl_weight: float = 0.025
) -> tuple[Tensor, Tensor, Tensor]:
    """LAF's VAE loss and its parts.

    ``recon_term = (1/B) sum_i sum_d (recon - e)^2``; ``kl = (1/B) * -1/2 sum_i sum_k [ln(sigma^2 + 1e-8) + 1 -
    mu^2 - sigma^2]``; ``loss = recon_term + kl_weight * kl``.

    Returns:
        ``(loss, recon_term, kl)`` (``kl`` unweighted).
    """
    batch = e.shape[0]
    recon_term = (recon - e).pow(2).sum() / batch
    var = sigma.pow(2)
    kl = -0.5 * (torch.log(var + _LOGVAR_EPS) + 1 - mu.pow(2) - var).sum() / batch
    return recon_term + kl_weight * kl, recon_term, kl


def vae_loss(recon: Tensor, e: Tensor, mu: Tensor, sigma: Tensor, kl_weight: float = 0.025) -> Tensor:
    """LAF's VAE loss ``(1/B) sum ||recon - e||^2 + kl_weight * KL`` (see :func:`vae_loss_terms`)."""
    return vae_loss_terms(recon, e, mu, sigma, kl_weight)[0]


def bounded_error(m: Tensor) -> Tensor:
    """``phi(m) = exp(m / (m + 1))``: 1 at 0, increasing, below ``e``."""
    return torch.exp(m / (m + 1))


def ue_loss_terms(recon_r: Tensor, e_r: Tensor, recon_f: Tensor, e_f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Extractor-unlearning loss and its parts: ``(loss, retain_term, forget_term)``, ``loss = retain - forget``."""
    retain = bounded_error((recon_r - e_r).pow(2).sum(dim=1)).sum()
    forget = bounded_error((recon_f - e_f).pow(2).sum(dim=1)).sum()
    return retain - forget, retain, forget


def ue_loss(recon_r: Tensor, e_r: Tensor, recon_f: Tensor, e_f: Tensor) -> Tensor:
    """``L_UE = sum_r phi(||h_D(e) - e||^2) - sum_f phi(||h_f(e) - e||^2)`` (sums, no mean)."""
    return ue_loss_terms(recon_r, e_r, recon_f, e_f)[0]


def _cosine_distance(u: Tensor, v: Tensor) -> Tensor:
    """``1 - u.v / sqrt((|u|^2 + 1e-12)(|v|^2 + 1e-12))`` per row (PyTorch's cosine-embedding loss, target +1)."""
    dot = (u * v).sum(dim=1)
    denom = torch.sqrt((u.pow(2).sum(dim=1) + _COS_EPS) * (v.pow(2).sum(dim=1) + _COS_EPS))
    return 1 - dot / denom


def ra_loss_terms(
    e_r: Tensor, t_r: Tensor, e_f: Tensor, t_f: Tensor, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Representation-alignment loss and its parts: ``(loss, align_term, repel_term)``, ``loss = align - repel``.

    ``align = sum_i a_i`` with ``a_i = 1 - cos(e_r_i, t_r_i)``; ``repel = B_r * ln sum_j exp(b_j / tau)`` with
    ``b_j = 1 - cos(e_f_j, t_f_j)``.
    """
    a = _cosine_distance(e_r, t_r)
    b = _cosine_distance(e_f, t_f)
    align = a.sum()
    repel = e_r.shape[0] * torch.logsumexp(b / temperature, dim=0)
    return align - repel, align, repel


def ra_loss(e_r: Tensor, t_r: Tensor, e_f: Tensor, t_f: Tensor, temperature: float) -> Tensor:
    """``L_RA = sum_i ln(exp(a_i) / sum_j exp(b_j / tau))`` (the authors' exact form)."""
    return ra_loss_terms(e_r, t_r, e_f, t_f, temperature)[0]


# ---------------------------------------------------------------------------------------------------- method
def _inputs(element: Any) -> Tensor:
    """The input tensor of one split batch; never touches a label."""
    return unpack_batch(element)[0]


class LAF(MultiStageUnlearningMethod):
    """LAF: label-agnostic forgetting at the representation level; ``repair=True`` is LAF+R.

    Stages, by epoch, with ``V = vae_epochs``, ``U = unlearn_epochs``,
    ``R = repair_epochs if repair else 0``:

    1. ``vae_all`` ``[0, V)``: fit the VAE ``h_D`` (Adam ``vae_lr``) on the frozen original model's (teacher's)
       representations of **unlabelled** inputs of ``full`` (``all_vae_data="all"``, the paper's choice) or
       ``retain``.
    2. ``vae_forget`` ``[V, 2V)``: fit ``h_f`` the same way on unlabelled ``forget`` inputs. Both VAEs are then
       frozen (``requires_grad=False``, eval); gradients still flow through them.
    3. ``unlearn`` ``[2V, 2V+U)``: paired unlabelled ``forget`` / ``retain`` batches (``min_size``: an epoch ends
       with the shorter loader). Per batch one extractor-unlearning step (:func:`ue_loss`, Adam ``lr_ue``) then
       one representation-alignment step (:func:`ra_loss` against the teacher, a second Adam ``lr_ra``), both
       over the extractor only. Student and teacher stay in eval mode (BatchNorm statistics used, never updated).
    4. ``repair`` ``[2V+U, 2V+U+R)`` (LAF+R only): cross-entropy (batch mean) on labelled retain batches, Adam
       ``repair_lr`` over the head only, eval mode kept.

    Splits and labels: stages 1–3 receive inputs only (no label of any split is ever read); the repair reads
    labels of ``retain_labelled`` (the datamodule's seeded ``labelled_fraction`` subset of the retain set;
    ``preset="reference"``: all of the retain set, one step per forget batch, as the authors' code). The
    representation is the input of the head submodule ``head_name`` (a forward pre-hook); the extractor is every
    parameter outside it. The teacher is a frozen deep copy of the model, registered as ``teacher`` so
    checkpoints keep the original model. Optimisers in order: ``[vae_all, vae_forget, ue, ra, (repair)]``.

    Budget: the unlearning stage's budget is optimiser steps, ``U * ceil(|forget| / batch_size)`` pairs of steps,
    so the datamodule's ``batch_size`` is part of the setting: the same epochs at batch 128 instead of the
    authors' 32 take a quarter of the steps (on the embedded digits, class removal: 80 instead of 260 steps, and
    the digit stays recognised). Change epochs and batch size together.

    Logged (per step and as unweighted epoch means): ``laf/stage``, ``laf/vae_all_{loss,recon,kl}``,
    ``laf/vae_forget_{loss,recon,kl}``, ``laf/ue_loss``, ``laf/ue_retain_term``, ``laf/ue_forget_term``,
    ``laf/ra_loss``, ``laf/ra_align_term``, ``laf/ra_repel_term``, ``laf/repair_loss``.

    The epoch budget ``2V + U + R`` follows from the stages (``trainer.max_epochs`` is set from it and the loaders
    are rebuilt every epoch); the datamodule's ``batch_size`` (32 in the paper) is used by every stage.

    Reference: S. Shen, C. Zhang, Y. Zhao, A. Bialkowski, W. Chen, M. Xu. *Label-Agnostic Forgetting: A
    Supervision-Free Unlearning in Deep Models.* ICLR 2024. arXiv:2404.00506. Code: ShaofeiShen768/LAF.

    Args:
        model: The trained classifier.
        head_name: Name of the head submodule; ``None`` detects it (the classifier's ``head_name``: ``"fc2"``
            on the LAF networks; else e.g. ``fc`` on a torchvision ResNet).
        latent_dim: VAE latent width ``d_z`` (8 CNN, 16 ResNet-18).
        vae_epochs: Epochs of each VAE stage (``>= 1``).
        vae_lr: Adam learning rate of the VAEs.
        kl_weight: Weight of the KL term of the VAE loss.
        all_vae_data: Data of ``h_D``: ``"all"`` (every training input, the paper's) or ``"retain"``.
        unlearn_epochs: Epochs of the unlearning stage (``>= 1``).
        lr_ue: Adam learning rate of the extractor-unlearning step.
        lr_ra: Adam learning rate of the representation-alignment step.
        temperature: ``tau``, dividing the forgetting term of :func:`ra_loss`.
        vae_output: ``"sigmoid"`` (faithful) or ``"identity"`` (experimental) VAE output.
        sample_latent: Sample the VAE latent on every forward (faithful) or use its mean.
        repair: Run the supervised repair stage (LAF+R).
        repair_epochs: Epochs of the repair stage (``>= 1`` when ``repair``).
        repair_lr: Adam learning rate of the repair.
        repair_split: ``"retain_labelled"`` (corrected: the labelled subset, one pass per epoch) or
            ``"retain_zip_forget"`` (reference: all retain labels, one step per forget batch); ``None``
            follows ``preset``.
        vae_optimizer: Optional optimiser factory for both VAE stages (default Adam ``vae_lr``).
        ue_optimizer: Optional optimiser factory of the unlearning step (default Adam ``lr_ue``).
        ra_optimizer: Optional optimiser factory of the alignment step (default Adam ``lr_ra``).
        repair_optimizer: Optional optimiser factory of the repair (default Adam ``repair_lr``).
        seed: Seed of the VAE latent noise (drawn from a generator keyed by epoch and batch, so resumed runs
            match uninterrupted ones).
        preset: ``"corrected"`` (default) or ``"reference"``; sets ``repair_split`` when it is ``None``.

    Raises:
        ValueError: On a bad hyperparameter (naming the allowed values), a missing head submodule, or (at fit) a
            head that the model does not call exactly once.
    """

    needs_labels = False
    train_splits = ("forget", "retain")

    def __init__(
        self,
        model: nn.Module,
        *,
        head_name: str | None = None,
        latent_dim: int = 8,
        vae_epochs: int = 10,
        vae_lr: float = 1e-3,
        kl_weight: float = 0.025,
        all_vae_data: Literal["all", "retain"] = "all",
        unlearn_epochs: int = 20,
        lr_ue: float = 5e-5,
        lr_ra: float = 1e-4,
        temperature: float = 20.0,
        vae_output: Literal["sigmoid", "identity"] = "sigmoid",
        sample_latent: bool = True,
        repair: bool = False,
        repair_epochs: int = 5,
        repair_lr: float = 1e-4,
        repair_split: Literal["retain_labelled", "retain_zip_forget"] | None = None,
        vae_optimizer: OptimizerCallable | None = None,
        ue_optimizer: OptimizerCallable | None = None,
        ra_optimizer: OptimizerCallable | None = None,
        repair_optimizer: OptimizerCallable | None = None,
        seed: int = 0,
        preset: Literal["corrected", "reference"] = "corrected",
    ) -> None:
        check_choice("preset", preset, ("corrected", "reference"))
        check_choice("all_vae_data", all_vae_data, ("all", "retain"))
        check_choice("vae_output", vae_output, ("sigmoid", "identity"))
        check_choice("repair_split", repair_split, ("retain_labelled", "retain_zip_forget", None))
        for name, value in (("latent_dim", latent_dim), ("vae_epochs", vae_epochs), ("unlearn_epochs", unlearn_epochs)):
            check_integer(name, value, 1)
        check_integer("repair_epochs", repair_epochs, 0)
        if repair and repair_epochs < 1:
            raise ValueError(f"repair_epochs must be an integer >= 1 when repair=True, got {repair_epochs!r}")
        for lr_name, lr in (("vae_lr", vae_lr), ("lr_ue", lr_ue), ("lr_ra", lr_ra), ("repair_lr", repair_lr)):
            check_positive(lr_name, lr)
        check_positive("temperature", temperature)
        check_positive("kl_weight", kl_weight, allow_zero=True)
        check_integer("seed", seed)
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        try:
            self._head_name = resolve_head_name(model, head_name)
        except ValueError as err:
            raise ValueError(f"head_name={head_name!r}: {err}") from None
        self._factories = {
            "vae_all": vae_optimizer,
            "vae_forget": vae_optimizer,
            "ue": ue_optimizer,
            "ra": ra_optimizer,
            "repair": repair_optimizer,
        }
        self.repair_split_resolved = repair_split or (
            "retain_zip_forget" if preset == "reference" else "retain_labelled"
        )
        super().__init__(model)
        dim = _representation_dim(model, self._head_name)
        self.teacher = copy.deepcopy(model)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.vae_all = RepresentationVAE(dim, latent_dim, output=vae_output, sample_latent=sample_latent)
        self.vae_forget = RepresentationVAE(dim, latent_dim, output=vae_output, sample_latent=sample_latent)
        self.representation_dim = dim

    # ------------------------------------------------------------------ representations
    def representation(self, network: nn.Module, x: Tensor, *, detach: bool = False) -> tuple[Tensor, Tensor]:
        """``(representation, logits)`` of ``network(x)``: the head's input, caught by a forward pre-hook.

        With ``detach`` the head receives the detached representation (no gradient into the extractor).
        """
        name = self._head_name
        captured: list[Tensor] = []

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if len(args) != 1 or not isinstance(args[0], Tensor):
                raise ValueError(f"the head {name!r} must be called with the representation as its only input")
            captured.append(args[0])
            return (args[0].detach(),) if detach else None

        handle = network.get_submodule(name).register_forward_pre_hook(hook)
        try:
            logits = network(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise ValueError(
                f"the head {name!r} of {type(network).__name__} was called {len(captured)} times in one forward; "
                "LAF needs it called exactly once"
            )
        return captured[0], logits

    def student_features(self, x: Tensor) -> Tensor:
        """Representation of ``x`` by the model being unlearned (with gradient)."""
        return self.representation(self.model, x)[0]

    @torch.no_grad()
    def teacher_features(self, x: Tensor) -> Tensor:
        """Representation of ``x`` by the frozen original model (no gradient)."""
        return self.representation(self.teacher, x)[0]

    # ------------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        """``vae_all``, ``vae_forget``, ``unlearn`` and (LAF+R) ``repair``."""
        hp = self.hparams
        v, u = int(hp["vae_epochs"]), int(hp["unlearn_epochs"])
        r = int(hp["repair_epochs"]) if hp["repair"] else 0
        all_split = "full" if hp["all_vae_data"] == "all" else "retain"
        stages = [
            Stage("vae_all", v, Phase(v, (all_split,), labelled=False)),
            Stage("vae_forget", v, Phase(v, ("forget",), labelled=False)),
            Stage("unlearn", u, Phase(u, ("forget", "retain"), mode="min_size", labelled=False)),
        ]
        if self.repair_split_resolved == "retain_labelled":
            repair_phase = Phase(max(r, 1), ("retain_labelled",), labelled=True)
        else:
            repair_phase = Phase(max(r, 1), ("forget", "retain"), mode="min_size", labelled=True)
        stages.append(Stage("repair", r, repair_phase))
        return stages

    def optimizer_names(self) -> list[str]:
        """Names of the optimisers returned by :meth:`configure_optimizers`, in order."""
        names = ["vae_all", "vae_forget", "ue", "ra"]
        if any(s.name == "repair" for s in self.active_stages()):
            names.append("repair")
        return names

    def _make_optimizer(self, name: str, params: list[nn.Parameter], lr: float) -> Optimizer:
        factory = self._factories[name]
        return factory(params) if factory is not None else torch.optim.Adam(params, lr=lr)

    def configure_optimizers(self) -> Any:
        """Adam optimisers ``[vae_all, vae_forget, ue, ra, (repair)]`` (stage 3 has two)."""
        hp = self.hparams
        extractor = self.extractor_parameters()
        optimizers = [
            self._make_optimizer("vae_all", list(self.vae_all.parameters()), hp["vae_lr"]),
            self._make_optimizer("vae_forget", list(self.vae_forget.parameters()), hp["vae_lr"]),
            self._make_optimizer("ue", extractor, hp["lr_ue"]),
            self._make_optimizer("ra", extractor, hp["lr_ra"]),
        ]
        if "repair" in self.optimizer_names():
            optimizers.append(self._make_optimizer("repair", self.head_parameters(), hp["repair_lr"]))
        return optimizers

    def named_optimizer(self, name: str) -> Any:
        """The (Lightning-wrapped) optimiser called ``name`` (see :meth:`optimizer_names`)."""
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        return optimizers[self.optimizer_names().index(name)]

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classifier's head."""
        return head_parameters(self.model, self._head_name)

    def extractor_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classifier outside the head."""
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.model.parameters() if id(p) not in head]

    # ------------------------------------------------------------------ modes and freezing
    def setup(self, stage: str) -> None:
        """Install the plan, then check with one dry forward that the head is called once with the expected width."""
        super().setup(stage)
        if stage != "fit" or self._trainer is None:
            return
        shape = getattr(getattr(self.trainer, "datamodule", None), "input_shape", None)
        if shape is None:
            return
        x = torch.zeros(2, *shape, device=self.device)
        with torch.no_grad():
            e, _ = self.representation(self.teacher, x)
        if e.ndim != 2 or e.shape[1] != self.representation_dim:
            raise ValueError(
                f"the input of head {self._head_name!r} has shape {tuple(e.shape)}; LAF needs a flat "
                f"B x {self.representation_dim} representation"
            )

    def _assert_modes(self) -> None:
        """Teacher always eval; VAEs frozen once fitted; student eval from the unlearning stage on."""
        self.teacher.eval()
        done = int(self.completed_stages)
        names = [s.name for s in self.active_stages()]
        fitted = set(names[:done])
        for vae_name in ("vae_all", "vae_forget"):
            if vae_name in fitted:
                vae = getattr(self, vae_name)
                vae.requires_grad_(False)
                vae.eval()
        if self.current_stage.name in ("unlearn", "repair"):
            self.model.eval()
            self.vae_all.eval()
            self.vae_forget.eval()

    def on_train_epoch_start(self) -> None:
        """Base bookkeeping, then re-assert eval modes and freezing (``fit`` and validation call ``train()``)."""
        super().on_train_epoch_start()
        self._assert_modes()
        self.log("laf/stage", float(self.stage_index_at(self.current_epoch)), on_step=False, on_epoch=True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Re-assert eval modes before every batch (mid-epoch validation would reset them)."""
        self._assert_modes()

    def stage_end(self, stage: Stage) -> None:
        """Freeze a VAE once its stage ends."""
        if stage.name in ("vae_all", "vae_forget"):
            vae = getattr(self, stage.name)
            vae.requires_grad_(False)
            vae.eval()

    # ------------------------------------------------------------------ steps
    def _noise(self, batch_idx: int, k: int) -> torch.Generator:
        """CPU generator of the VAE noise, keyed by (seed, rank, epoch, batch, call) so resumes reproduce it."""
        key = (int(self.hparams["seed"]), int(self.global_rank), int(self.current_epoch), int(batch_idx), k)
        return seeded_generator(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)

    def _log(self, name: str, value: Tensor, prog_bar: bool = False) -> None:
        self.log(f"laf/{name}", value.detach(), on_step=True, on_epoch=True, prog_bar=prog_bar, batch_size=1)

    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """One step of the current stage (the passed optimiser is ignored: stage 3 has two)."""
        if stage.name in ("vae_all", "vae_forget"):
            return self._vae_step(stage, batch, batch_idx)
        if stage.name == "unlearn":
            return self._unlearn_step(batch, batch_idx)
        return self._repair_step(batch)

    def _vae_step(self, stage: Stage, batch: Any, batch_idx: int) -> Tensor:
        x = _inputs(batch[stage.phase.splits[0]])
        e = self.teacher_features(x)
        vae: RepresentationVAE = getattr(self, stage.name)
        recon, _, mu, sigma = vae(e, generator=self._noise(batch_idx, 0))
        loss, recon_term, kl = vae_loss_terms(recon, e, mu, sigma, float(self.hparams["kl_weight"]))
        optimizer = self.named_optimizer(stage.name)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self._log(f"{stage.name}_loss", loss, prog_bar=True)
        self._log(f"{stage.name}_recon", recon_term)
        self._log(f"{stage.name}_kl", kl)
        return loss

    def _unlearn_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_f, x_r = _inputs(batch["forget"]), _inputs(batch["retain"])
        # (a) extractor unlearning
        e_r, e_f = self.student_features(x_r), self.student_features(x_f)
        recon_r = self.vae_all(e_r, generator=self._noise(batch_idx, 1))[0]
        recon_f = self.vae_forget(e_f, generator=self._noise(batch_idx, 2))[0]
        loss_ue, retain_term, forget_term = ue_loss_terms(recon_r, e_r, recon_f, e_f)
        opt_ue = self.named_optimizer("ue")
        opt_ue.zero_grad()
        self.manual_backward(loss_ue)
        opt_ue.step()
        # (b) representation alignment on fresh representations
        e_r, e_f = self.student_features(x_r), self.student_features(x_f)
        t_r, t_f = self.teacher_features(x_r), self.teacher_features(x_f)
        loss_ra, align, repel = ra_loss_terms(e_r, t_r, e_f, t_f, float(self.hparams["temperature"]))
        opt_ra = self.named_optimizer("ra")
        opt_ra.zero_grad()
        self.manual_backward(loss_ra)
        opt_ra.step()
        self._log("ue_loss", loss_ue, prog_bar=True)
        self._log("ue_retain_term", retain_term)
        self._log("ue_forget_term", forget_term)
        self._log("ra_loss", loss_ra, prog_bar=True)
        self._log("ra_align_term", align)
        self._log("ra_repel_term", repel)
        return None  # type: ignore[return-value]

    def _repair_step(self, batch: Any) -> Tensor:
        split = "retain_labelled" if "retain_labelled" in batch else "retain"
        x, y, _ = self.labelled_batch(batch[split])
        _, logits = self.representation(self.model, x, detach=True)
        loss = F.cross_entropy(logits, y)
        optimizer = self.named_optimizer("repair")
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self._log("repair_loss", loss, prog_bar=True)
        return loss


def _representation_dim(model: nn.Module, head_name: str) -> int:
    """Width of the representation: ``model.embedding_dim`` or the in-features of the head's first Linear."""
    dim = getattr(model, "embedding_dim", None)
    if is_integer(dim) and dim > 0:
        return dim
    linears = [m for m in model.get_submodule(head_name).modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[0].in_features)
    raise ValueError(
        f"cannot infer the representation width of {type(model).__name__}: set its `embedding_dim` attribute or "
        f"use a head {head_name!r} starting with an nn.Linear"
    )
