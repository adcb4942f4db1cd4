"""Attacks: plain objects, ``attack(model, x, y) -> x_adv`` on [0,1] images."""
from robustlab.attacks.base import Attack
from robustlab.attacks.deepfool import DeepFool
from robustlab.attacks.fgsm import FGSM, RFGSM, RLLC
from robustlab.attacks.optimization import CW2, EAD
from robustlab.attacks.pgd import BIM, ILLC, LLC, MIFGSM, PGD

__all__ = ["Attack", "BIM", "CW2", "DeepFool", "EAD", "FGSM", "ILLC", "LLC", "MIFGSM", "PGD", "RFGSM", "RLLC"]
