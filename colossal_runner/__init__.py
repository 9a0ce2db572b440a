"""colossal_runner: a config-driven training framework for PyTorch with pipeline parallelism built in."""
__version__ = '0.1.0'
