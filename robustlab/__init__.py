"""robustlab: train robust image classifiers and evaluate their robustness."""

from robustlab import resolvers  # noqa: F401  (registers ${mnist_cifar:...})
from robustlab.checkpoint import load_model
from robustlab.errors import RobustlabError

__version__ = "0.1.0"
__all__ = ["load_model", "evaluate_model", "RobustlabError", "__version__"]


def __getattr__(name: str):
    """``robustlab.evaluate_model``, imported on first use (it pulls in the whole evaluation)."""
    if name == "evaluate_model":
        from robustlab.api import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
