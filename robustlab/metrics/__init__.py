"""torchmetrics Metrics with distributed-reducible (sum/max/min/cat) states."""

from robustlab.metrics.accuracy import CA
from robustlab.metrics.adversarial_accuracy import AAB, AAW
from robustlab.metrics.attack_metric import AttackMetric
from robustlab.metrics.confidence import ACAC, ACTC, NTE
from robustlab.metrics.corruption import MCE, MFR, RmCE
from robustlab.metrics.coverage import KMNCov, NBCov, NeuronProfile, NeuronRange, SNACov, TKNCov, profile_neurons
from robustlab.metrics.defense_utility import CAV, CCV, COS, CRR, CSR
from robustlab.metrics.imperceptibility import ASS, PSD, ALDp
from robustlab.metrics.misclassification_ratio import MR
from robustlab.metrics.structure import EBD, EBD2, ENI, NeuronSensitivity, NeuronUncertainty
from robustlab.metrics.transform_robustness import RGB, RIC

__all__ = [
    "CA",
    "MR",
    "MCE",
    "RmCE",
    "MFR",
    "AttackMetric",
    "ACAC",
    "ACTC",
    "NTE",
    "ALDp",
    "ASS",
    "PSD",
    "RGB",
    "RIC",
    "AAW",
    "AAB",
    "CAV",
    "CRR",
    "CSR",
    "CCV",
    "COS",
    "KMNCov",
    "NBCov",
    "SNACov",
    "TKNCov",
    "NeuronProfile",
    "NeuronRange",
    "profile_neurons",
    "EBD",
    "EBD2",
    "ENI",
    "NeuronSensitivity",
    "NeuronUncertainty",
]
