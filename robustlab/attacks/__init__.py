"""Attacks: plain objects, ``attack(model, x, y) -> x_adv`` on [0,1] images."""
from robustlab.attacks.base import Attack
from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.pgd import PGD

__all__ = ["Attack", "FGSM", "PGD"]
