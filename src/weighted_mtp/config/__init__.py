from weighted_mtp.config.load import config_to_dict, load_config
from weighted_mtp.config.schema import Config

__all__ = ["Config", "load_config", "config_to_dict"]
