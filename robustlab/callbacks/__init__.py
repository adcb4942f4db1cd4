"""Lightning callbacks."""
from robustlab.callbacks.attack_callback import AttackCallback
from robustlab.callbacks.corruption_callback import CorruptionCallback
from robustlab.callbacks.coverage_callback import CoverageCallback, CoverageProfiler
from robustlab.callbacks.defense_callback import DefenseUtilityCallback
from robustlab.callbacks.detection_callback import DetectionCallback
from robustlab.callbacks.structure_callback import StructureCallback

__all__ = ["AttackCallback", "CorruptionCallback", "DefenseUtilityCallback", "DetectionCallback", "CoverageCallback",
           "CoverageProfiler", "StructureCallback"]
