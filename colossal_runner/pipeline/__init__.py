"""Splitting a model into pipeline stages: partitioning and per-rank materialization."""
from .build import build_pipeline_model, get_layers, split_model, stage_parts
from .partition import (METHODS, PartitionError, check_boundaries, partition_balanced, partition_layers,
                        partition_uniform)
from .seeding import seed_pipeline_stage, stage_seed

__all__ = ['build_pipeline_model', 'get_layers', 'split_model', 'stage_parts', 'METHODS',
           'check_boundaries', 'partition_balanced', 'partition_layers', 'partition_uniform',
           'PartitionError', 'seed_pipeline_stage', 'stage_seed']
