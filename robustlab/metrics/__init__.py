"""torchmetrics Metrics with distributed-reducible (sum/max/min/cat) states."""
from robustlab.metrics.accuracy import CA
from robustlab.metrics.corruption import MCE, MFR, RmCE
from robustlab.metrics.misclassification_ratio import MR

__all__ = ["CA", "MR", "MCE", "RmCE", "MFR"]
