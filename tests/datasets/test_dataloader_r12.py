"""Review round 12 (data): configured samplers under data parallelism, samplers that do not take the
dataset, IterableDatasets under DP, and the drop_last warning's two causes."""
import logging
import warnings

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from colossal_runner.data import UnpaddedDistributedSampler, build_dataloader
from colossal_runner.distributed import ParallelContext


def _indexed(n):
    """``n`` samples whose label is their index."""
    return TensorDataset(torch.zeros(n, 2), torch.arange(n))


def _labels(loader):
    return [int(i) for _, y in loader for i in y]


def _replica(rank, replicas=3):
    return ParallelContext(pipeline=1, rank=rank, world_size=replicas)  # no process group needed


@pytest.fixture
def info_log(project_log):
    logger = logging.getLogger('colossal_runner')
    level = logger.level
    logger.setLevel(logging.INFO)
    yield project_log
    logger.setLevel(level)


def test_a_configured_distributed_sampler_on_the_test_split_reads_each_sample_once(info_log):
    """mmcv configs put DistributedSampler on the val loader; torch's pads 47 samples to 48 over 3
    replicas, and the repeated one would count twice in the test metrics."""
    ds = _indexed(47)
    cfg = dict(batch_size=5, sampler=dict(type='DistributedSampler'))
    loaders = [build_dataloader(cfg, ds, context=_replica(r), pad_shards=False) for r in range(3)]
    assert all(type(loader.sampler) is UnpaddedDistributedSampler for loader in loaders)
    read = [_labels(loader) for loader in loaders]
    assert sorted(sum(read, [])) == list(range(47))  # every sample once
    said = [line for line in info_log.lines if 'built as UnpaddedDistributedSampler' in line]
    assert len(said) == 1, info_log.lines  # the logging rank only
    assert 'a repeated sample counts twice in the test metrics' in said[0]
    # the train split keeps torch's padding (DDP needs equal shards); so does a test split with drop_last
    train = build_dataloader(cfg, ds, context=_replica(0), pad_shards=True)
    assert type(train.sampler) is DistributedSampler and len(train.sampler) == 16
    cutting = dict(batch_size=5, sampler=dict(type='DistributedSampler', drop_last=True))
    with pytest.warns(UserWarning, match=r'DistributedSampler\(drop_last=True\) over 3 data-parallel '
                                         r'replicas leaves out the same 2 of 47'):
        cut = build_dataloader(cutting, ds, context=_replica(0), pad_shards=False)
    assert type(cut.sampler) is DistributedSampler and len(cut.sampler) == 15


def test_a_padding_sampler_subclass_on_the_test_split_warns_how_many_count_twice():
    class Padding(DistributedSampler):
        pass

    ds = _indexed(47)
    cfg = dict(batch_size=5, sampler=dict(type=Padding))
    with pytest.warns(UserWarning, match=r'test dataloader sampler Padding pads the shards of the 3 '
                                         r'data-parallel replicas to 48 samples: 1 of the 47 test samples is '
                                         r'read twice and count twice in the test metrics'):
        build_dataloader(cfg, ds, context=_replica(0), pad_shards=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_dataloader(cfg, ds, context=_replica(1), pad_shards=False)  # not the logging rank
        build_dataloader(cfg, _indexed(48), context=_replica(0), pad_shards=False)  # nothing padded
        build_dataloader(cfg, ds, context=_replica(0), pad_shards=True)  # training needs the padding


class _NeverEnds(torch.utils.data.Dataset):
    """A map-style dataset whose __getitem__ never raises IndexError: iterating it does not end."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 10

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > 1000:  # torch.as_tensor(dataset) would read on for ever
            raise RuntimeError('read as a sequence of weights')
        return torch.zeros(2), 0


def test_samplers_whose_first_argument_is_not_the_dataset_take_everything_from_the_config():
    ds = _indexed(10)
    weights = [0.0, 1.0] + [0.0] * 8  # only sample 1
    weighted = build_dataloader(dict(batch_size=4, sampler=dict(type='WeightedRandomSampler', weights=weights,
                                                                 num_samples=6)), ds, seed=2)
    assert _labels(weighted) == [1] * 6
    subset = dict(batch_size=4, sampler=dict(type='SubsetRandomSampler', indices=[2, 5, 7]))
    order = _labels(build_dataloader(subset, ds, seed=2))
    assert sorted(order) == [2, 5, 7]
    assert _labels(build_dataloader(subset, ds, seed=2)) == order  # a generator seeded with the run's seed
    # the dataset is not taken as the weights (which would read it as a sequence)
    never_ends = _NeverEnds()
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'weights'"):
        build_dataloader(dict(batch_size=4, sampler=dict(type='WeightedRandomSampler', num_samples=6)),
                         never_ends)
    assert never_ends.reads == 0
    # no num_replicas: refused under data parallelism, as before
    with pytest.raises(ValueError, match='sampler WeightedRandomSampler takes no num_replicas and rank'):
        build_dataloader(dict(batch_size=4, sampler=dict(type='WeightedRandomSampler', weights=[1.0] * 10,
                                                         num_samples=6)), ds, context=_replica(0, 2))


def test_a_registered_sampler_gets_the_dataset_whatever_its_first_argument_is_named():
    # a sampler of one's own, def __init__(self, data, ...): built until the rule above came in
    class EveryOther(torch.utils.data.Sampler):
        def __init__(self, data, start=0):
            self.n, self.start = len(data), start

        def __iter__(self):
            return iter(range(self.start, self.n, 2))

        def __len__(self):
            return len(range(self.start, self.n, 2))

    loader = build_dataloader(dict(batch_size=4, sampler=dict(type=EveryOther, start=1)), _indexed(10))
    assert _labels(loader) == [1, 3, 5, 7, 9]


def test_an_iterable_dataset_under_data_parallelism_needs_a_map_style_dataset():
    class RankStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([(torch.zeros(2), 0)] * 4)

    with pytest.raises(ValueError) as info:
        build_dataloader(dict(batch_size=2), RankStream(), context=_replica(0, 2))
    message = str(info.value)
    assert 'no indices for 2 data-parallel replicas' in message
    assert 'Data parallelism needs a map-style Dataset (__getitem__ and __len__)' in message
    assert 'own part' not in message  # advice that the refusal contradicted
    with pytest.raises(ValueError, match='Shuffle inside the dataset'):
        build_dataloader(dict(batch_size=2, shuffle=True), RankStream())


def _drop_last_warnings(ds, batch_size, rank=0, **cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        build_dataloader(dict(batch_size=batch_size, drop_last=True, **cfg), ds, context=_replica(rank),
                         pad_shards=False)
    return [str(w.message) for w in caught if 'leaves out the same' in str(w.message)]


def test_drop_last_on_a_test_loader_counts_the_sampler_cut_and_the_batch_tails_apart():
    ds = _indexed(47)
    # 47 over 3 replicas: the sampler cuts 2, each replica's 15 split into 3 batches of 5: nothing more
    (cut,) = _drop_last_warnings(ds, 5)
    assert cut.startswith('DistributedSampler(drop_last=True) over 3 data-parallel replicas leaves out the '
                          'same 2 of 47 samples on every pass (cut so that each replica gets 15 samples')
    assert 'use a dataset whose size is a multiple of 3, or drop_last=False' in cut
    assert 'batch_size' not in cut  # no batch size helps here
    # batches of 4: 3 more on each replica
    cut, tails = _drop_last_warnings(ds, 4)
    assert 'leaves out the same 2 of 47' in cut
    assert tails.startswith('dataloader drop_last=True with batch_size=4 leaves out the same 9 of 47 '
                            'samples on every pass (the last, incomplete batch of each of the 3 '
                            'data-parallel replicas')
    assert 'choose a batch_size that divides 15' in tails
    assert _drop_last_warnings(ds, 4, rank=1) == _drop_last_warnings(ds, 4, rank=2) == []  # logged once
    # unpadded shards (a configured DistributedSampler on the test split): 16, 16 and 15 samples
    (tails,) = _drop_last_warnings(ds, 5, sampler=dict(type='DistributedSampler'))
    assert 'leaves out the same 2 of 47' in tails
    assert "a batch_size that divides each replica's share (16 and 15 samples)" in tails
