"""Lightning callbacks."""
from robustlab.callbacks.attack_callback import AttackCallback
from robustlab.callbacks.corruption_callback import CorruptionCallback

__all__ = ["AttackCallback", "CorruptionCallback"]
