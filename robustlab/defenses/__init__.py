"""Defenses: LightningModules on the shared :class:`RobustClassifier` base."""
from robustlab.defenses.adversarial import AdversarialTraining
from robustlab.defenses.base import RobustClassifier
from robustlab.defenses.igr import IGR
from robustlab.defenses.mart import MART
from robustlab.defenses.pgd_at import PGDAdversarialTraining
from robustlab.defenses.standard import Standard
from robustlab.defenses.trades import TRADES

__all__ = ["RobustClassifier", "AdversarialTraining", "Standard", "PGDAdversarialTraining", "TRADES", "MART", "IGR"]
