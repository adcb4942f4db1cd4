"""Defenses: LightningModules on the shared :class:`RobustClassifier` base."""
from robustlab.defenses.base import RobustClassifier
from robustlab.defenses.pgd_at import PGDAdversarialTraining
from robustlab.defenses.standard import Standard

__all__ = ["RobustClassifier", "Standard", "PGDAdversarialTraining"]
