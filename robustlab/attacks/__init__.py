"""Attacks: plain objects, ``attack(model, x, y) -> x_adv`` on [0,1] images."""

from robustlab.attacks.adaptive import BPDA, EOT, adapt
from robustlab.attacks.apgd import APGD, APGDT
from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.base import Attack
from robustlab.attacks.blb import BLB
from robustlab.attacks.boundary import BoundaryAttack
from robustlab.attacks.deepfool import DeepFool
from robustlab.attacks.fab import FABT
from robustlab.attacks.fgsm import FGSM, RFGSM, RLLC
from robustlab.attacks.jsma import JSMA
from robustlab.attacks.nattack import NAttack
from robustlab.attacks.optimization import CW2, EAD
from robustlab.attacks.optmargin import OptMargin
from robustlab.attacks.pgd import BIM, ILLC, LLC, MIFGSM, PGD
from robustlab.attacks.spsa import SPSA
from robustlab.attacks.square import Square
from robustlab.attacks.transfer import TransferAttack
from robustlab.attacks.uap import UAP

__all__ = ["Attack", "BIM", "CW2", "DeepFool", "EAD", "FGSM", "ILLC", "LLC", "MIFGSM", "PGD", "RFGSM", "RLLC"]
__all__ += ["BPDA", "BoundaryAttack", "EOT", "NAttack", "SPSA", "TransferAttack", "adapt"]
__all__ += ["APGD", "APGDT", "AutoAttack", "FABT", "Square"]
__all__ += ["BLB", "JSMA", "OptMargin", "UAP"]
