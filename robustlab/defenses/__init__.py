"""Defenses: LightningModules on the shared :class:`RobustClassifier` base."""

from robustlab.defenses.adversarial import AdversarialTraining
from robustlab.defenses.base import RobustClassifier
from robustlab.defenses.distillation import DefensiveDistillation, DistillationTeacher
from robustlab.defenses.eat import EAT
from robustlab.defenses.eit import EIT
from robustlab.defenses.feature_squeezing import FeatureSqueezing
from robustlab.defenses.igr import IGR
from robustlab.defenses.lid import LID
from robustlab.defenses.magnet import MagNet
from robustlab.defenses.mart import MART
from robustlab.defenses.nat import NAT
from robustlab.defenses.pd import PixelDefend
from robustlab.defenses.pgd_at import PGDAdversarialTraining
from robustlab.defenses.rc import RC
from robustlab.defenses.rt import RT
from robustlab.defenses.standard import Standard
from robustlab.defenses.te import ThermometerEncoding
from robustlab.defenses.trades import TRADES

__all__ = [
    "RobustClassifier",
    "AdversarialTraining",
    "Standard",
    "PGDAdversarialTraining",
    "TRADES",
    "MART",
    "IGR",
    "FeatureSqueezing",
    "LID",
    "MagNet",
    "ThermometerEncoding",
    "NAT",
    "EAT",
    "DistillationTeacher",
    "DefensiveDistillation",
    "RT",
    "EIT",
    "RC",
    "PixelDefend",
]
