"""The evaluation engine: one loop over the test batches (:class:`EvaluationLoop`), one record per batch
(:class:`BatchRecord`) and the evaluations that read it (:class:`Evaluation` subclasses)."""

from robustlab.evaluation.attacks import AttackEvaluation
from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.checks import Checks
from robustlab.evaluation.corruption import Corruption
from robustlab.evaluation.coverage import Coverage
from robustlab.evaluation.curves import Curves
from robustlab.evaluation.defense import DefenseUtility
from robustlab.evaluation.detection import Detection
from robustlab.evaluation.gallery import Gallery
from robustlab.evaluation.loop import EvaluationLoop
from robustlab.evaluation.record import BatchRecord
from robustlab.evaluation.saved import SavedExamples
from robustlab.evaluation.structure import Structure

__all__ = [
    "AttackEvaluation",
    "BatchRecord",
    "Checks",
    "Context",
    "Corruption",
    "Coverage",
    "Curves",
    "DefenseUtility",
    "Detection",
    "Evaluation",
    "EvaluationLoop",
    "Gallery",
    "SavedExamples",
    "Structure",
]
