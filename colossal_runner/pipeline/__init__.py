"""Splitting a model into pipeline stages: partitioning and per-rank materialization."""
from .build import build_pipeline_model, get_layers, split_model, stage_parts
from .partition import (METHODS, check_boundaries, partition_balanced, partition_layers,
                        partition_uniform)

__all__ = ['build_pipeline_model', 'get_layers', 'split_model', 'stage_parts', 'METHODS',
           'check_boundaries', 'partition_balanced', 'partition_layers', 'partition_uniform']
