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
    with pytest.warns(UserWarning, match='leaves out the same 2 of 10 samples'):
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


@pytest.mark.parametrize('key', ['shuffle', 'drop_last', 'pin_memory', 'persistent_workers'])
@pytest.mark.parametrize('value', ['no', 0, 1, None])
def test_loader_switches_must_be_bools(key, value):
    """bool('no') is True: a string or number would have switched the option on."""
    ds = SyntheticClassification(8, 4, 2)
    with pytest.raises(TypeError, match=rf'dataloader {key} must be True or False, got '
                                        rf'{type(value).__name__} {value!r}; e\.g\. {key}=False'):
        build_dataloader(dict(batch_size=4, **{key: value}), ds)


def test_shuffle_false_and_drop_last_false_keep_every_item_in_order():
    ds = SyntheticClassification(10, 4, 2)
    loader = build_dataloader(dict(batch_size=4, shuffle=False, drop_last=False), ds)
    assert _order(loader) == ds.data[:, 0].tolist()


def test_a_configured_random_sampler_ignores_the_global_rng():
    """Pipeline stages consume the global RNG differently (dropout): a configured RandomSampler
    must draw its order from a generator seeded with the run's seed, or the first stage (inputs)
    and the last (labels) read different batches."""
    ds = SyntheticClassification(40, 4, 2)
    cfg = dict(batch_size=8, sampler=dict(type='RandomSampler'))
    stages = []
    for draws in (0, 7):  # e.g. one stage ran dropout, the other did not
        torch.manual_seed(123)
        loader = build_dataloader(cfg, ds, seed=5)
        epochs = []
        for _ in range(2):
            torch.rand(draws)
            epochs.append(_order(loader))
        stages.append(epochs)
    assert stages[0] == stages[1]
    assert stages[0][0] != stages[0][1]  # still a new order each epoch
    assert sorted(stages[0][1]) == sorted(ds.data[:, 0].tolist())
    other_seed = build_dataloader(cfg, ds, seed=6)
    assert _order(other_seed) != stages[0][0]
    given = torch.Generator().manual_seed(0)
    kept = build_dataloader(dict(batch_size=8, sampler=dict(type='RandomSampler', generator=given)), ds)
    assert kept.sampler.generator is given


def test_order_depends_on_global_rng():
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from colossal_runner.data import order_depends_on_global_rng
    ds = SyntheticClassification(8, 4, 2)
    assert order_depends_on_global_rng(DataLoader(ds, shuffle=True))
    assert not order_depends_on_global_rng(DataLoader(ds, shuffle=True, generator=torch.Generator()))
    assert not order_depends_on_global_rng(DataLoader(ds))
    batches = BatchSampler(RandomSampler(ds), 2, False)
    assert order_depends_on_global_rng(DataLoader(ds, batch_sampler=batches))
    assert not order_depends_on_global_rng(build_dataloader(dict(batch_size=4, shuffle=True), ds))
    configured = build_dataloader(dict(batch_size=4, sampler=dict(type='RandomSampler')), ds)
    assert not order_depends_on_global_rng(configured)
    assert not order_depends_on_global_rng([(torch.zeros(2), 0)])


def test_drop_last_warns_when_it_leaves_out_the_same_samples_every_pass():
    import warnings
    ds = SyntheticClassification(26, 4, 2)
    with pytest.warns(UserWarning, match=r'drop_last=True with batch_size=8 leaves out the same 2 of 26 '
                                         r'samples on every pass .*a test loader never evaluates them'
                                         r'.*a batch_size that divides 26'):
        loader = build_dataloader(dict(batch_size=8, drop_last=True), ds)
    assert len(_order(loader)) == 24
    with pytest.warns(UserWarning, match=r'leaves out the same 10 of 26 samples on every pass \(the last, '
                                         r'incomplete batch of each of the 2 data-parallel replicas'):
        build_dataloader(dict(batch_size=8, drop_last=True), ds,
                         context=ParallelContext(pipeline=1, rank=0, world_size=2))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_dataloader(dict(batch_size=13, drop_last=True), ds)  # nothing left out
        build_dataloader(dict(batch_size=8, drop_last=True, shuffle=True), ds)  # other samples each epoch
        build_dataloader(dict(batch_size=8, drop_last=True, sampler=dict(type='RandomSampler')), ds)
