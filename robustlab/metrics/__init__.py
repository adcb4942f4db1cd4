"""torchmetrics Metrics with distributed-reducible (sum/max/min/cat) states."""
from robustlab.metrics.accuracy import CA
from robustlab.metrics.misclassification_ratio import MR

__all__ = ["CA", "MR"]
