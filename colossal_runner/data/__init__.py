"""Datasets that ship with the install (no download) and dataloader building."""
from .char_text import CharText, default_corpus, vocabulary_text
from .dataloader import (UnpaddedDistributedSampler, build_dataloader, build_dataset,
                         order_depends_on_global_rng, seed_worker, unsplittable_batch)
from .digits import Digits
from .synthetic import SyntheticClassification

__all__ = ['CharText', 'Digits', 'SyntheticClassification', 'UnpaddedDistributedSampler', 'build_dataloader',
           'build_dataset', 'default_corpus', 'order_depends_on_global_rng', 'seed_worker',
           'unsplittable_batch', 'vocabulary_text']
