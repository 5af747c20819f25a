"""tubelet: video transformers (ViViT) in PyTorch."""

from .checkpoint import ModelInfo, Preprocessing, load_model, read_info, resolve_model_path, save_model
from .errors import CheckpointError, TubeletError
from .models import ConfigError, ViViT, ViViTConfig, create_model, get_config, list_models

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "ModelInfo", "Preprocessing", "TubeletError", "ViViT",
           "ViViTConfig", "create_model", "get_config", "list_models", "load_model", "read_info",
           "resolve_model_path", "save_model", "__version__"]
