"""Output distances between the unlearned and the retrained model (``metrics.md`` §4)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional import softmax64

__all__ = ["OutputDistance"]

#: Probabilities are clamped at this value before every logarithm (``metrics.md`` §4, library decision).
PROB_CLAMP = 1e-12


class OutputDistance(Metric):
    """Distances between two models' softmax outputs on the same samples, logged as ``dist/<name>``.

    With ``p_u``, ``p_r`` the float64 softmax outputs of the unlearned and retrained models on ``N`` samples of
    ``C`` classes and ``m = (p_u + p_r) / 2``, :meth:`compute` returns:

    - ``"activation_l2"``: mean over samples of ``||p_u - p_r||_2`` (JiT/SSD ``actv_dist``).
    - ``"activation_l1"``: mean over samples of ``||p_u - p_r||_1`` (SCRUB's activation distance).
    - ``"js"``: the JiT/SSD code's JS divergence, the mean over all ``N * C`` entries of
      ``1/2 m ln(m / p_u) + 1/2 m ln(m / p_r)`` (PyTorch ``kl_div`` "mean" reduction).
    - ``"js_std"``: textbook JS, the mean over samples of ``1/2 KL(p_u || m) + 1/2 KL(p_r || m)``.

    Probabilities are clamped at ``1e-12`` before the logarithms; ``0 ln 0 = 0``. Every value is ``nan`` when no
    sample was seen.

    Direction: lower = closer to the retrained model (``higher_is_better = False``); the ideal is 0.

    Distributed: the states are float64 sums of the per-sample (per-entry for ``js``) terms and int64 counts, all
    reduced with ``"sum"``, so 1 and N processes agree when every sample is evaluated on exactly one rank.

    Args:
        inputs: What :meth:`update` receives: ``"logits"`` (softmax applied in float64) or ``"probs"``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    l2_sum: Tensor
    l1_sum: Tensor
    js_sum: Tensor
    js_std_sum: Tensor
    num_samples: Tensor
    num_entries: Tensor

    def __init__(self, inputs: str = "logits", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if inputs not in ("logits", "probs"):
            raise ValueError(f"inputs must be 'logits' or 'probs', got {inputs!r}")
        self.inputs = inputs
        for name in ("l2_sum", "l1_sum", "js_sum", "js_std_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_entries", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _probs(self, values: Tensor) -> Tensor:
        if self.inputs == "logits":
            return softmax64(values)
        return values.to(torch.float64)

    def update(self, unlearned: Tensor, retrained: Tensor) -> None:
        """Add one batch of paired outputs of the two models on the same samples.

        Args:
            unlearned: Logits (or probabilities, see ``inputs``) of the unlearned model, shape ``[n, C]``.
            retrained: The same for the retrained model, shape ``[n, C]``.

        Raises:
            ValueError: If the shapes differ or are not ``[n, C]``.
        """
        if unlearned.ndim != 2 or unlearned.shape != retrained.shape:
            raise ValueError(
                f"OutputDistance expects two [n, C] tensors of the same shape, got {tuple(unlearned.shape)} and "
                f"{tuple(retrained.shape)}"
            )
        device = self.l2_sum.device
        p_u = self._probs(unlearned).to(device)
        p_r = self._probs(retrained).to(device)
        diff = p_u - p_r
        m = (p_u + p_r) / 2
        log_m = m.clamp_min(PROB_CLAMP).log()
        log_u = p_u.clamp_min(PROB_CLAMP).log()
        log_r = p_r.clamp_min(PROB_CLAMP).log()
        self.l2_sum += torch.linalg.vector_norm(diff, ord=2, dim=1).sum()
        self.l1_sum += diff.abs().sum()
        self.js_sum += (0.5 * m * (log_m - log_u) + 0.5 * m * (log_m - log_r)).sum()
        self.js_std_sum += (0.5 * p_u * (log_u - log_m) + 0.5 * p_r * (log_r - log_m)).sum()
        self.num_samples += p_u.shape[0]
        self.num_entries += p_u.numel()

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"activation_l2", "activation_l1", "js", "js_std"}`` as float64 scalars (``nan`` if empty)."""
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.l2_sum.device)
        if int(self.num_samples) == 0:
            return {"activation_l2": nan, "activation_l1": nan, "js": nan, "js_std": nan}
        samples = self.num_samples.to(torch.float64)
        return {
            "activation_l2": self.l2_sum / samples,
            "activation_l1": self.l1_sum / samples,
            "js": self.js_sum / self.num_entries.to(torch.float64),
            "js_std": self.js_std_sum / samples,
        }
