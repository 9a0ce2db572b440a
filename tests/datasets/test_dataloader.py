import pytest
import torch

from colossal_runner.data import SyntheticClassification, build_dataloader, build_dataset
from colossal_runner.distributed import ParallelContext


def _order(loader):
    return torch.cat([x[:, 0] for x, _ in loader]).tolist()


def test_shuffle_order_depends_on_seed_and_epoch_only():
    ds = SyntheticClassification(40, 4, 2)
    a = build_dataloader(dict(batch_size=8, shuffle=True), ds, seed=1)
    b = build_dataloader(dict(batch_size=8, shuffle=True), ds, seed=1)
    torch.manual_seed(99)  # the global RNG does not matter
    assert _order(a) == _order(b)
    a.sampler.set_epoch(1)
    epoch1 = _order(a)
    assert epoch1 != _order(b)
    b.sampler.set_epoch(1)
    assert _order(b) == epoch1
    assert sorted(epoch1) == sorted(ds.data[:, 0].tolist())


def test_no_shuffle_keeps_dataset_order_and_shuffle_argument_overrides_config():
    ds = SyntheticClassification(10, 4, 2)
    loader = build_dataloader(dict(batch_size=4, shuffle=True), ds, shuffle=False)
    assert _order(loader) == ds.data[:, 0].tolist()
    assert [len(y) for _, y in loader] == [4, 4, 2]
    dropped = build_dataloader(dict(batch_size=4, drop_last=True), ds)
    assert [len(y) for _, y in dropped] == [4, 4]


def test_data_parallel_replicas_get_disjoint_shards():
    ds = SyntheticClassification(32, 4, 2)
    shards = []
    for rank in range(2):
        context = ParallelContext(pipeline=1, data=2, rank=rank, world_size=2)
        loader = build_dataloader(dict(batch_size=4, shuffle=True), ds, context=context, seed=0)
        assert len(loader) == 4
        shards.append(set(_order(loader)))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(ds.data[:, 0].tolist())
    # Pipeline stages of one replica read the same order.
    orders = [_order(build_dataloader(dict(batch_size=4, shuffle=True), ds, seed=0,
                                      context=ParallelContext(pipeline=2, data=2, rank=r, world_size=4)))
              for r in (2, 3)]
    assert orders[0] == orders[1]


def test_custom_sampler_from_registry():
    ds = SyntheticClassification(10, 4, 2)
    loader = build_dataloader(dict(batch_size=5, sampler=dict(type='SequentialSampler')), ds)
    assert _order(loader) == ds.data[:, 0].tolist()
    with pytest.raises(KeyError, match="'SequentalSampler' is not in the data_sampler registry"):
        build_dataloader(dict(batch_size=5, sampler=dict(type='SequentalSampler')), ds)


def test_a_custom_sampler_splits_the_data_between_replicas_or_is_refused():
    """With 2 data-parallel replicas a configured sampler replaces the DistributedSampler: one
    that takes num_replicas and rank is given them (and the config's shuffle and the seed), so
    the replicas see disjoint halves; one that does not would give each replica everything."""
    ds = SyntheticClassification(10, 4, 2)
    halves = []
    for rank in (0, 1):
        context = ParallelContext(pipeline=1, rank=rank, world_size=2)
        loader = build_dataloader(dict(batch_size=5, shuffle=True, sampler=dict(type='DistributedSampler')),
                                  ds, context=context, seed=4)
        assert (loader.sampler.num_replicas, loader.sampler.rank, loader.sampler.shuffle) == (2, rank, True)
        assert loader.sampler.seed == 4
        halves.append(set(_order(loader)))
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 10
    # 2 pipeline stages, one replica: both stages read every sample (in the same order)
    for rank in (0, 1):
        loader = build_dataloader(dict(batch_size=5, sampler=dict(type='DistributedSampler')), ds,
                                  context=ParallelContext(pipeline=2, rank=rank, world_size=2), seed=4)
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (1, 0)
        assert len(_order(loader)) == 10
    with pytest.raises(ValueError, match=r'sampler SequentialSampler takes no num_replicas and rank, so each '
                                         r'of the 2 data-parallel replicas would train on the whole dataset'):
        build_dataloader(dict(batch_size=5, sampler=dict(type='SequentialSampler')), ds,
                         context=ParallelContext(pipeline=1, rank=0, world_size=2))
    with pytest.warns(UserWarning, match='shuffle=True is not passed to sampler SequentialSampler'):
        build_dataloader(dict(batch_size=5, shuffle=True, sampler=dict(type='SequentialSampler')), ds)


def test_workers_are_seeded():
    ds = SyntheticClassification(8, 4, 2)
    loader = build_dataloader(dict(batch_size=4, num_workers=1, shuffle=True), ds, seed=3)
    assert len(list(loader)) == 2


def test_bad_options_name_the_key():
    ds = SyntheticClassification(8, 4, 2)
    with pytest.raises(KeyError, match="'batchsize' \\(did you mean 'batch_size'\\?\\)"):
        build_dataloader(dict(batchsize=4), ds)
    with pytest.raises(ValueError, match='batch_size must be a positive int, got 0'):
        build_dataloader(dict(batch_size=0), ds)


def test_build_dataset_builds_transform_configs():
    pytest.importorskip('torchvision')
    ds = build_dataset(dict(type='FakeData', size=4, image_size=(1, 8, 8), num_classes=3,
                            transform=[dict(type='ToTensor'),
                                       dict(type='Normalize', mean=(0.5,), std=(0.5,))]))
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (1, 8, 8) and float(x.min()) >= -1.0


def test_an_iterable_dataset_cannot_be_shuffled_or_split_by_the_loader():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([(torch.zeros(4), 0)] * 6)

    assert len(list(build_dataloader(dict(batch_size=2), Stream()))) == 3
    with pytest.raises(ValueError, match=r'Stream is an IterableDataset: it has no indices for shuffle=True'):
        build_dataloader(dict(batch_size=2, shuffle=True), Stream())
    with pytest.raises(ValueError, match=r'no indices for 2 data-parallel replicas'):
        build_dataloader(dict(batch_size=2), Stream(),
                         context=ParallelContext(pipeline=1, rank=0, world_size=2))
