"""Lightning callbacks of training (evaluation runs through :mod:`robustlab.evaluation`)."""

from robustlab.callbacks.coverage_profiler import CoverageProfiler
from robustlab.callbacks.last_checkpoint import LastCheckpoint
from robustlab.callbacks.rng_state import RNGState

__all__ = ["CoverageProfiler", "LastCheckpoint", "RNGState"]
