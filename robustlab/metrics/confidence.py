"""ACAC, ACTC and NTE: DEEPSEC's confidence metrics of adversarial examples (Sec. II-B)."""

from robustlab.metrics.attack_metric import SuccessMean
from robustlab.metrics.functional import adversarial_class_confidence, noise_tolerance, true_class_confidence


class ACAC(SuccessMean):
    """Average confidence of the adversarial class, ``(1/m) sum_i P(x_adv_i)_{F(x_adv_i)}`` over the m
    successful adversarial examples (DEEPSEC Sec. II-B; comprehensive paper Eq. 9). Eq. 9 prints ``P_{y_i}``,
    the true class: a typo that the paper's own text ("confidence towards the incorrect class") and DEEPSEC
    contradict, so the predicted (adversarial) class is used."""

    higher_is_better = True  # for the attacker

    def values(self, model, x, x_adv, y, adv_logits, target):
        return adversarial_class_confidence(adv_logits)


class ACTC(SuccessMean):
    """Average confidence of the true class, ``(1/m) sum_i P(x_adv_i)_{y_i}`` over the m successful
    adversarial examples (DEEPSEC Sec. II-B). The comprehensive paper's Eq. 10 averages over all n examples:
    ``ACTC(over="all")``."""

    higher_is_better = False  # for the attacker

    def values(self, model, x, x_adv, y, adv_logits, target):
        return true_class_confidence(adv_logits, y)


class NTE(SuccessMean):
    """Noise tolerance estimation, ``(1/m) sum_i [P(x_adv_i)_{F(x_adv_i)} - max_{j != F(x_adv_i)}
    P(x_adv_i)_j]`` over the m successful adversarial examples (DEEPSEC Sec. II-B). The comprehensive paper's
    Eq. 11 averages over all n examples (``NTE(over="all")``) and takes the gap at the clean prediction
    ``F(x_i)``, a typo: the tolerance is of the adversarial example, so its own prediction ``F(x_adv_i)`` is used,
    as DEEPSEC does."""

    higher_is_better = True  # for the attacker

    def values(self, model, x, x_adv, y, adv_logits, target):
        return noise_tolerance(adv_logits)
