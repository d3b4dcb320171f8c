from weighted_mtp.metrics.critic_metrics import (
    best_f1_threshold,
    class_means,
    f1_at_threshold,
    position_correlation,
    roc_auc,
    spikiness,
)

__all__ = ["best_f1_threshold", "class_means", "f1_at_threshold", "position_correlation", "roc_auc", "spikiness"]
