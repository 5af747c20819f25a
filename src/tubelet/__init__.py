"""tubelet: video transformers (ViViT) in PyTorch."""

from .checkpoint import ModelInfo, Preprocessing, load_model, read_info, resolve_model_path, save_model
from .errors import CheckpointError, TubeletError
from .models import ConfigError, ViViT, ViViTConfig, create_model, get_config, list_models

__version__ = "0.1.0"


def pipeline(model, **options):
    """A callable that classifies videos (paths, (T, H, W, 3) uint8 arrays or lists of them) with
    ``model``: see :func:`tubelet.inference.pipeline` (imported on first use: it needs the
    decoding stack)."""
    from .inference import pipeline as make
    return make(model, **options)

__all__ = ["CheckpointError", "ConfigError", "ModelInfo", "Preprocessing", "TubeletError", "ViViT",
           "ViViTConfig", "create_model", "get_config", "list_models", "load_model", "pipeline", "read_info",
           "resolve_model_path", "save_model", "__version__"]
