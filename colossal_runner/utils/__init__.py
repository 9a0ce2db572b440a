"""Small utilities shared by the package."""
from .logging import MetricWriter, get_logger

__all__ = ['get_logger', 'MetricWriter']
