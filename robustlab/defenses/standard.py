"""No defense: plain cross-entropy training (the raw model of DEEPSEC)."""

from robustlab.defenses.base import RobustClassifier


class Standard(RobustClassifier):
    """Empirical risk minimisation on clean data."""
