"""Config files for colossal_runner: ``Config``, ``ConfigDict``, ``DictAction`` (mmcv 1.x API)."""
from .config import Config
from .config_dict import ConfigDict
from .dict_action import DictAction
from .errors import ConfigError, config_error_exit, format_config_error, format_key_path

__all__ = ['Config', 'ConfigDict', 'DictAction', 'ConfigError', 'config_error_exit', 'format_config_error',
           'format_key_path']
