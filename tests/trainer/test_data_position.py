"""DataPosition: resuming mid-epoch on data-parallel replicas is exact and raises no false warning."""
import os
import warnings

import pytest
import torch
from torch import nn

from colossal_runner.data import SyntheticClassification, build_dataloader
from colossal_runner.engine import Engine
from colossal_runner.testing import run_distributed
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import BaseHook, SaveCheckpointHook


def _engine(model):
    return Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))


def _loader(context=None):
    dataset = SyntheticClassification(num_samples=32, num_features=4, num_classes=2, seed=0)
    return build_dataloader(dict(batch_size=4), dataset, context=context, shuffle=True, seed=0)


def _resume_on_replicas(rank, world_size, ckpt_dir):
    import torch.distributed as dist

    from colossal_runner.distributed import setup_parallel, wrap_data_parallel

    context = setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    # 32 samples, 16 per replica in batches of 4: 4 steps per epoch; iter_3.pt is mid-epoch 1.
    engine = _engine(wrap_data_parallel(_model(), context))
    Trainer(engine, hooks=[SaveCheckpointHook(3, ckpt_dir, by_epoch=False)]).fit(_loader(context), epochs=2)
    reference = [p.detach().clone() for p in engine.model.parameters()]
    dist.barrier()  # rank 0 has written the checkpoints every rank reads
    torch.manual_seed(100 + rank)
    resumed = _engine(wrap_data_parallel(_model(), context))
    trainer = Trainer(resumed)
    trainer.resume(os.path.join(ckpt_dir, 'iter_3.pt'))
    loaded_rank = trainer.data_position.pending['sampler']['rank']  # what the file recorded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        trainer.fit(_loader(context), epochs=2)
    return dict(warnings=[str(w.message) for w in caught], reference=reference,
                params=[p.detach().clone() for p in resumed.model.parameters()],
                loaded_rank=loaded_rank, sampler_rank=trainer.data_position.state_dict()['sampler']['rank'])


def test_resuming_mid_epoch_on_replicas_is_exact_and_warns_on_no_rank(tmp_path):
    ckpt_dir = str(tmp_path / 'ck')
    results = run_distributed(_resume_on_replicas, 2, ckpt_dir, timeout=120)
    for rank, result in enumerate(results):
        # Every replica resumed replica 0's file (sampler rank 0) and kept its own rank.
        assert result['loaded_rank'] == 0 and result['sampler_rank'] == rank
        assert not [w for w in result['warnings'] if 'data sampler' in w], (rank, result['warnings'])
        for got, want in zip(result['params'], result['reference']):
            assert torch.equal(got, want), rank
    for a, b in zip(results[0]['params'], results[1]['params']):
        assert torch.equal(a, b)
    # One replica instead of two: epochs twice as long, so the saved part of the epoch is no
    # position in this run's epoch (refused, as the docs say; an epoch checkpoint resumes).
    trainer = Trainer(_engine(_model()))
    trainer.resume(os.path.join(ckpt_dir, 'iter_3.pt'))
    with pytest.raises(ValueError, match=r'taken 3 optimizer steps into epoch 1 of a run with \d+ steps per '
                                         r'epoch; this run has \d+: .*number of data-parallel replicas'):
        trainer.fit(_loader(), epochs=1)


def test_a_mid_epoch_checkpoint_past_the_end_of_a_shorter_epoch_is_refused_with_the_fix(tmp_path):
    """Resumed with a larger batch (or more replicas), the saved part of the epoch no longer fits
    in an epoch: replaying it used to end in a bare StopIteration."""
    dataset = SyntheticClassification(num_samples=32, num_features=4, num_classes=2, seed=0)
    ckpt_dir = str(tmp_path / 'ck')
    torch.manual_seed(0)
    loader = build_dataloader(dict(batch_size=4), dataset, shuffle=True, seed=0)  # 8 steps per epoch
    Trainer(_engine(_model()), hooks=[SaveCheckpointHook(6, ckpt_dir, by_epoch=False)]).fit(loader, epochs=1)
    trainer = Trainer(_engine(_model()))
    trainer.resume(os.path.join(ckpt_dir, 'iter_6.pt'))
    wider = build_dataloader(dict(batch_size=8), dataset, shuffle=True, seed=0)  # 4 steps per epoch
    expected = (r'taken 6 optimizer steps into epoch 1 of a run with 8 steps per epoch; this run has 4: the '
                r'batch size.*at the end of an epoch \(epoch_N\.pt\)')
    with pytest.raises(ValueError, match=expected):
        trainer.fit(wider, epochs=2)
    # the same checkpoint with the saved settings still resumes
    trainer = Trainer(_engine(_model()))
    trainer.resume(os.path.join(ckpt_dir, 'iter_6.pt'))
    trainer.fit(loader, epochs=1)
    assert trainer.states['iteration'] == 8
    # The checkpoint records its run's epoch length: in epoch 1 (where the iteration count cannot
    # tell) and in epoch 2 alike, another length is refused; these used to skip data without a word.
    ckpt_dir = str(tmp_path / 'ck2')
    Trainer(_engine(_model()), hooks=[SaveCheckpointHook(11, ckpt_dir, by_epoch=False)]).fit(loader, epochs=2)
    Trainer(_engine(_model()), hooks=[SaveCheckpointHook(3, ckpt_dir, by_epoch=False)]).fit(loader, epochs=1)
    for name, epoch, done in (('iter_3.pt', 1, 3), ('iter_11.pt', 2, 3)):
        for batch_size, steps in ((5, 7), (8, 4), (2, 16)):
            trainer = Trainer(_engine(_model()))
            trainer.resume(os.path.join(ckpt_dir, name))
            other = build_dataloader(dict(batch_size=batch_size), dataset, shuffle=True, seed=0)
            with pytest.raises(ValueError, match=rf'taken {done} optimizer steps into epoch {epoch} of a run '
                                                 rf'with 8 steps per epoch; this run has {steps}:'):
                trainer.fit(other, epochs=3)


def test_a_run_resumed_with_another_epoch_length_resumes_its_own_mid_epoch_checkpoints(tmp_path):
    """Epoch 1 at 8 steps, then from epoch_1.pt at 4 steps (allowed at an epoch's end): the new run's
    own mid-epoch checkpoint must resume where it was, though the iteration count mixes both lengths."""
    dataset = SyntheticClassification(num_samples=32, num_features=4, num_classes=2, seed=0)
    ckpt_dir = str(tmp_path / 'ck')
    narrow = build_dataloader(dict(batch_size=4), dataset, shuffle=True, seed=0)  # 8 steps per epoch
    wide = build_dataloader(dict(batch_size=8), dataset, shuffle=True, seed=0)  # 4 steps per epoch
    Trainer(_engine(_model()), hooks=[SaveCheckpointHook(1, ckpt_dir)]).fit(narrow, epochs=1)
    first = Trainer(_engine(_model()), hooks=[SaveCheckpointHook(10, ckpt_dir, by_epoch=False)])
    first.resume(os.path.join(ckpt_dir, 'epoch_1.pt'))
    first.fit(wide, epochs=3)  # iteration 10 is 2 steps into epoch 2 (8 + 2)
    again = Trainer(_engine(_model()))
    again.resume(os.path.join(ckpt_dir, 'iter_10.pt'))
    again.fit(wide, epochs=3)
    assert again.states['iteration'] == first.states['iteration'] == 16
    for got, want in zip(again.engine.model.parameters(), first.engine.model.parameters()):
        assert torch.equal(got, want)


def test_pipeline_stages_refuse_a_loader_whose_order_comes_from_the_global_rng():
    """Each stage draws dropout from the global RNG differently, so such a loader would give the
    first stage other inputs than the labels the last stage reads."""
    from torch.utils.data import DataLoader

    from colossal_runner.distributed import ParallelContext, set_context
    from colossal_runner.trainer.trainer import _check_same_order_on_stages

    dataset = SyntheticClassification(num_samples=8, num_features=4, num_classes=2, seed=0)
    unseeded = DataLoader(dataset, batch_size=4, shuffle=True)
    seeded = DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    _check_same_order_on_stages(train=unseeded)  # one process: nothing to agree with
    set_context(ParallelContext(pipeline=2, rank=0, world_size=2))
    try:
        expected = (r'the train dataloader draws its sample order from the global torch RNG '
                    r'\(its RandomSampler has no generator.*generator=torch')
        with pytest.raises(ValueError, match=expected):
            Trainer(_engine(_model())).fit(unseeded, epochs=1)
        _check_same_order_on_stages(train=seeded, test=DataLoader(dataset, batch_size=4))
    finally:
        set_context(None)


def test_a_checkpoint_of_another_pipeline_layout_is_refused_naming_both_layouts():
    trainer = Trainer(_engine(_model()))
    state = trainer.state_dict()
    assert state['meta']['pipeline_size'] == 1 and state['meta']['model_chunks'] == 1
    for meta, saved in ((dict(pipeline_size=4, model_chunks=1), '4 pipeline stages'),
                        (dict(pipeline_size=1, model_chunks=2), '1 pipeline stage x 2 model chunks')):
        expected = f'written by a run with {saved}; this run has 1 pipeline stage, so its stages hold other'
        with pytest.raises(ValueError, match=expected + ' layers.*parallel.pipeline='):
            Trainer(_engine(_model())).load_state_dict(dict(state, meta=dict(state['meta'], **meta)))
    older = dict(state, meta={k: v for k, v in state['meta'].items() if k != 'model_chunks'})
    Trainer(_engine(_model())).load_state_dict(older)  # checkpoints from before model_chunks was recorded
    # Weights by name (strict=False) may come from any layout: a whole model's checkpoint gives each
    # pipeline stage its own layers, whose names keep the whole model's indices.
    other = dict(state, meta=dict(state['meta'], pipeline_size=4))
    Trainer(_engine(_model())).load_state_dict(other, finetune=True, strict=False)
    Trainer(_engine(_model())).load_state_dict(other, strict=False)


def test_weights_only_loads_check_the_pipeline_layout_too():
    """tools/test.py loads with finetune=True: a checkpoint of another chunk layout gave a raw
    'missing keys' KeyError blaming the model config, where --resume names the layout."""
    state = Trainer(_engine(_model())).state_dict()
    chunked = dict(state, meta=dict(state['meta'], model_chunks=2))
    with pytest.raises(ValueError, match=r'written by a run with 1 pipeline stage x 2 model chunks; this run '
                                         r'has 1 pipeline stage.*parallel.pipeline=1 and the same schedule'):
        Trainer(_engine(_model())).load_state_dict(chunked, finetune=True)
    # a checkpoint of this layout, and bare weights (no layout recorded), still load as weights only
    Trainer(_engine(_model())).load_state_dict(state, finetune=True)
    Trainer(_engine(_model())).load_state_dict(state['engine']['model'], finetune=True)


def _batch_sampler_loader(seed=0):
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    dataset = SyntheticClassification(num_samples=32, num_features=4, num_classes=2, seed=0)
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_sampler=BatchSampler(sampler, 4, drop_last=False))


class _RecordBatches(BaseHook):
    def __init__(self):
        super().__init__()
        self.batches = []

    def after_train_iter(self, runner, output, label, loss):
        self.batches.append((runner.states['epoch'], label.tolist()))


def test_a_distributed_sampler_inside_a_batch_sampler_gets_each_epochs_order():
    """With ``batch_sampler=``, torch sets ``loader.sampler`` to a SequentialSampler: set_epoch must
    reach the batch sampler's own sampler, or every epoch repeats the first one's order."""
    from colossal_runner.trainer.data_position import set_sampler_epoch

    loader = _batch_sampler_loader()
    orders = []
    for epoch in (1, 2, 3):
        set_sampler_epoch(loader, epoch)
        assert loader.batch_sampler.sampler.epoch == epoch - 1
        orders.append([y.tolist() for _, y in loader])
    assert orders[0] != orders[1] and orders[1] != orders[2]
    record = _RecordBatches()
    Trainer(_engine(_model()), hooks=[record]).fit(_batch_sampler_loader(), epochs=2)
    per_epoch = {e: [labels for ep, labels in record.batches if ep == e] for e in (1, 2)}
    assert per_epoch[1] == orders[0] and per_epoch[2] == orders[1]


def test_a_batch_sampler_with_set_epoch_of_its_own_gets_it():
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    class EpochBatchSampler(BatchSampler):
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    from colossal_runner.trainer.data_position import set_sampler_epoch
    dataset = SyntheticClassification(num_samples=8, num_features=4, num_classes=2, seed=0)
    loader = DataLoader(dataset, batch_sampler=EpochBatchSampler(SequentialSampler(dataset), 4, False))
    set_sampler_epoch(loader, 3)
    assert loader.batch_sampler.epoch == 2


def test_resuming_mid_epoch_with_a_batch_sampler_is_exact_and_checks_its_sampler(tmp_path):
    ckpt_dir = str(tmp_path / 'ck')
    torch.manual_seed(0)
    engine = _engine(_model())
    Trainer(engine, hooks=[SaveCheckpointHook(10, ckpt_dir, by_epoch=False)]).fit(_batch_sampler_loader(),
                                                                                  epochs=2)
    reference = [p.detach().clone() for p in engine.model.parameters()]
    trainer = Trainer(_engine(_model()))
    trainer.resume(os.path.join(ckpt_dir, 'iter_10.pt'))  # 8 steps per epoch: mid-epoch 2
    assert trainer.data_position.pending['sampler'] == dict(type='DistributedSampler', seed=0, epoch=1,
                                                            shuffle=True, num_replicas=1, rank=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        trainer.fit(_batch_sampler_loader(), epochs=2)
    for got, want in zip(trainer.engine.model.parameters(), reference):
        assert torch.equal(got, want)
    trainer = Trainer(_engine(_model()))
    trainer.resume(os.path.join(ckpt_dir, 'iter_10.pt'))
    with pytest.warns(UserWarning, match=r"different data sampler.*\{'seed': \(0, 1\)\}"):
        trainer.fit(_batch_sampler_loader(seed=1), epochs=2)
