"""tubelet: video transformers (ViViT) in PyTorch."""

from .checkpoint import load_model, save_model
from .models import ConfigError, ViViT, ViViTConfig, create_model, get_config, list_models

__version__ = "0.1.0"
__all__ = ["ConfigError", "ViViT", "ViViTConfig", "create_model", "get_config", "list_models",
           "load_model", "save_model", "__version__"]
