"""Config schema (typed) and range validation."""

from weightshare.config.schema import TrainConfig, register_configs
from weightshare.config.validate import resolved_container, validate_config

__all__ = ["TrainConfig", "register_configs", "resolved_container", "validate_config"]
