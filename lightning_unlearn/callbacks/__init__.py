"""Lightning callbacks that own the forgetting metrics and membership-inference attacks."""

from lightning_unlearn.callbacks.base import SplitMetricsCallback, evaluate_together
from lightning_unlearn.callbacks.cost import UnlearningCost
from lightning_unlearn.callbacks.forgetting import ForgettingMetrics
from lightning_unlearn.callbacks.membership import MembershipInference
from lightning_unlearn.callbacks.report import UnlearningReport
from lightning_unlearn.callbacks.retrain_comparison import RetrainComparison
from lightning_unlearn.callbacks.stage_progress import StageProgressBar
from lightning_unlearn.callbacks.summary import collect_metrics, metrics_table

__all__ = [
    "ForgettingMetrics",
    "MembershipInference",
    "RetrainComparison",
    "SplitMetricsCallback",
    "StageProgressBar",
    "UnlearningCost",
    "UnlearningReport",
    "collect_metrics",
    "evaluate_together",
    "metrics_table",
]
