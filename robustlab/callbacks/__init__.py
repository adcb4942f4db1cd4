"""Lightning callbacks."""
from robustlab.callbacks.attack_callback import AttackCallback

__all__ = ["AttackCallback"]
