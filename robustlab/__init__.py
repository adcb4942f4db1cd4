"""robustlab: train robust image classifiers and evaluate their robustness."""

from robustlab import resolvers  # noqa: F401  (registers ${mnist_cifar:...})
from robustlab.checkpoint import load_model
from robustlab.errors import RobustlabError

__version__ = "0.1.0"
__all__ = ["load_model", "RobustlabError", "__version__"]
