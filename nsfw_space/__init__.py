"""nsfw-space: NSFW image moderation with a ViT classifier, as a Python API, a CLI and a Gradio Space.

>>> from nsfw_space import NSFWClassifier
>>> clf = NSFWClassifier.from_pretrained("Falconsai/nsfw_image_detection")  # doctest: +SKIP
>>> clf.predict("photo.jpg").nsfw_score  # doctest: +SKIP
"""

from .classifier import NSFWClassifier, Prediction
from .config import DEFAULT_MODEL, Settings
from .errors import ConfigError, InvalidImageError, ModelLoadError, NSFWSpaceError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ConfigError",
    "InvalidImageError",
    "ModelLoadError",
    "NSFWClassifier",
    "NSFWSpaceError",
    "Prediction",
    "Settings",
    "__version__",
]
