"""Helpers for tests and benchmarks: run a function on several gloo processes."""
from .dist import DistributedTestError, free_port, run_distributed

__all__ = ['DistributedTestError', 'free_port', 'run_distributed']
