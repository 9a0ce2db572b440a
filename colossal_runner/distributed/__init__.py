from .context import ParallelContext, get_context, set_context

__all__ = ['ParallelContext', 'get_context', 'set_context']
