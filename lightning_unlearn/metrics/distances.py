"""Output distances between the unlearned and the retrained model (``dist/*``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional import softmax64

__all__ = ["OutputDistance"]

#: Natural logarithm of the smallest positive float64, ``ln(2**-1074)``: the logarithm used for a probability that
#: is exactly 0, so every logarithm stays finite while every positive probability keeps its own logarithm.
LOG_ZERO_PROB = -1074 * math.log(2.0)


class OutputDistance(Metric):
    """Distances between two models' softmax outputs on the same samples, logged as ``dist/<name>``.

    With ``p_u``, ``p_r`` the float64 softmax outputs of the unlearned and retrained models on ``N`` samples of
    ``C`` classes and ``m = (p_u + p_r) / 2``, :meth:`compute` returns:

    - ``"activation_l2"``: mean over samples of ``||p_u - p_r||_2`` (JiT/SSD ``actv_dist``).
    - ``"activation_l1"``: mean over samples of ``||p_u - p_r||_1`` (SCRUB's activation distance).
    - ``"js"``: the JS divergence as the SSD/JiT code computes it (``JSDiv``, also behind SSD's ZRF
      ``UnLearningScore = 1 - JSDiv``), the mean over all ``N * C`` entries of
      ``1/2 m ln(m / p_u) + 1/2 m ln(m / p_r)``, i.e. ``1/2 kl_div(ln p_u, m) + 1/2 kl_div(ln p_r, m)`` with
      PyTorch's default "mean" reduction. It is ``1/2 KL(m || p_u) + 1/2 KL(m || p_r)`` divided by ``C``, not
      textbook JS.
    - ``"js_std"``: textbook JS, the mean over samples of ``1/2 KL(p_u || m) + 1/2 KL(p_r || m)`` (summed over
      classes).

    Every ``x ln y`` term is computed as in ``torch.xlogy``: 0 when ``x = 0`` (so ``0 ln 0 = 0``), and the
    logarithms are not clamped, so every probability, however small, enters with its own logarithm and the values
    equal the peer code's wherever that is finite. With ``inputs="logits"`` the logarithms come from a float64
    log-softmax and are finite even where the softmax underflows to 0. With ``inputs="probs"`` a probability that
    is exactly 0 has its logarithm taken as ``ln(2**-1074) = -744.44`` (the smallest positive float64), so the
    values stay finite where the peer code gives ``inf`` (``m > 0 = p``) or ``nan`` (``m = p = 0``). Every value
    is ``nan`` when no sample was seen.

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

    def _probs_and_logs(self, values: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Float64 probabilities and their finite natural logarithms on ``device``."""
        if self.inputs == "logits":
            log_p = torch.log_softmax(values.to(device=device, dtype=torch.float64), dim=-1)
            return softmax64(values).to(device), log_p
        p = values.to(device=device, dtype=torch.float64)
        return p, _log_prob(p)

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
        p_u, log_u = self._probs_and_logs(unlearned, device)
        p_r, log_r = self._probs_and_logs(retrained, device)
        diff = p_u - p_r
        m = (p_u + p_r) / 2
        log_m = _log_prob(m)
        m_log_m = torch.xlogy(m, m)
        # kl_div(ln p, m) per entry: m ln m - m ln p, with x ln y = 0 at x = 0 (as torch.xlogy).
        kl_m_u = m_log_m - _times_log(m, log_u)
        kl_m_r = m_log_m - _times_log(m, log_r)
        kl_u_m = torch.xlogy(p_u, p_u) - _times_log(p_u, log_m)
        kl_r_m = torch.xlogy(p_r, p_r) - _times_log(p_r, log_m)
        self.l2_sum += torch.linalg.vector_norm(diff, ord=2, dim=1).sum()
        self.l1_sum += diff.abs().sum()
        self.js_sum += (0.5 * kl_m_u + 0.5 * kl_m_r).sum()
        self.js_std_sum += (0.5 * kl_u_m + 0.5 * kl_r_m).sum()
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


def _log_prob(p: Tensor) -> Tensor:
    """``ln p`` where ``p > 0``, ``ln(2**-1074)`` where ``p`` is 0 (see :data:`LOG_ZERO_PROB`)."""
    return torch.where(p > 0, p.log(), torch.full_like(p, LOG_ZERO_PROB))


def _times_log(x: Tensor, log_y: Tensor) -> Tensor:
    """``x * log_y`` with the ``torch.xlogy`` convention: 0 wherever ``x = 0``."""
    return torch.where(x == 0, torch.zeros_like(x), x * log_y)
