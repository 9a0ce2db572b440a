"""The shipped pipeline configs evaluate as much of the test set as their microbatches allow."""
import glob
import os
import warnings

import pytest

from colossal_runner.config import Config
from colossal_runner.data import build_dataloader, build_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPELINE_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                          if '_base_' not in p and 'pipeline' in os.path.basename(p))


def test_there_are_pipeline_configs():
    assert {os.path.basename(p) for p in PIPELINE_CONFIGS} >= {'mlp_pipeline.py', 'gpt_tiny_pipeline.py'}


@pytest.mark.parametrize('path', PIPELINE_CONFIGS, ids=os.path.basename)
def test_the_test_loader_leaves_out_no_more_than_the_microbatches_force(path):
    """Every batch splits into num_microbatches equal parts, so with drop_last the test set may lose
    ``len % num_microbatches`` samples at least; a batch size that loses more is a bad choice."""
    cfg = Config.fromfile(path)
    m = cfg.schedule.num_microbatches
    dataset = build_dataset(cfg.data.test.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the drop_last warning: the count is checked below
        loader = build_dataloader(cfg.data.test.dataloader, dataset)
    assert loader.batch_size % m == 0
    evaluated = len(loader) * loader.batch_size if loader.drop_last else len(dataset)
    assert len(dataset) - evaluated == len(dataset) % m, (path, len(dataset), loader.batch_size)
