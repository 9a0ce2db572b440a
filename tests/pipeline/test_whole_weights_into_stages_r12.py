"""A pipeline run fine-tunes from the whole model's weights (a one-process run's checkpoint, bare
weights saved by a plain torch loop): each stage takes its own layers' weights by name."""
import os

import pytest
import torch

from colossal_runner.checkpoint import save_checkpoint
from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine
from colossal_runner.engine.schedule import InterleavedPipelineSchedule, PipelineSchedule
from colossal_runner.models import MLP
from colossal_runner.pipeline import build_pipeline_model
from colossal_runner.trainer import Trainer

MLP_CFG = dict(type='MLP', in_features=8, hidden=[16, 16, 16], num_classes=3)


@pytest.fixture(autouse=True)
def _reset_context():
    yield
    set_context(None)


def _stage_trainer(rank, chunks):
    set_context(ParallelContext(2, rank=rank, world_size=2))
    torch.manual_seed(5)  # other initial values than the saved model's
    stage = build_pipeline_model(dict(MLP_CFG), num_model_chunks=chunks)
    schedule = InterleavedPipelineSchedule(4, chunks) if chunks > 1 else PipelineSchedule(2)
    engine = Engine(stage, torch.nn.CrossEntropyLoss(), torch.optim.SGD(stage.parameters(), lr=0.1),
                    step_schedule=schedule)
    return Trainer(engine), stage


def _whole_model_run(tmp_path):
    """A one-process run's checkpoint of the whole model, as ``checkpoints/epoch_2.pt``."""
    set_context(ParallelContext())
    torch.manual_seed(0)
    model = MLP(**{k: v for k, v in MLP_CFG.items() if k != 'type'})
    trainer = Trainer(Engine(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1)))
    trainer.states['epoch'] = 2
    path = os.path.join(tmp_path, 'checkpoints', 'epoch_2.pt')
    os.makedirs(os.path.dirname(path))
    save_checkpoint(trainer.state_dict(), path)
    set_context(None)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize('rank,chunks', [(0, 1), (1, 1), (1, 2)])
@pytest.mark.parametrize('bare', [False, True])
def test_each_stage_takes_its_layers_from_the_whole_models_weights(tmp_path, rank, chunks, bare):
    path, whole = _whole_model_run(tmp_path)
    if bare:  # torch.save(model.state_dict()) of a plain loop
        path = os.path.join(tmp_path, 'pretrained.pt')
        torch.save(whole, path)
    trainer, stage = _stage_trainer(rank, chunks)
    # the file named is read whole: there used to be no file but <name>_stage<s>.pt for a stage to read
    trainer.resume(path, finetune=True)
    got = {(k.split('.', 1)[1] if chunks > 1 else k): v for k, v in stage.state_dict().items()}
    assert got and set(got) < set(whole)
    for key, value in got.items():
        assert torch.equal(value, whole[key]), key


def test_resuming_a_whole_models_checkpoint_on_stages_names_the_layouts(tmp_path):
    path, _ = _whole_model_run(tmp_path)
    trainer, _ = _stage_trainer(0, 1)
    expected = 'written by a run with 1 pipeline stage.*this run has 2 pipeline stages'
    with pytest.raises(ValueError, match=expected):
        trainer.resume(path)  # a full resume needs the layout it was trained with


def test_a_stages_own_file_is_still_preferred_to_a_whole_one_of_that_name(tmp_path):
    path, whole = _whole_model_run(tmp_path)
    trainer, stage = _stage_trainer(1, 1)
    own = {k: torch.full_like(v, 7.0) for k, v in stage.state_dict().items()}
    stage_state = trainer.state_dict()
    stage_state['engine']['model'] = own
    save_checkpoint(stage_state, path[:-3] + '_stage1.pt')
    trainer.resume(path, finetune=True)
    assert all(torch.equal(v, own[k]) for k, v in stage.state_dict().items())


def test_interleaved_chunks_on_one_process_take_the_whole_models_weights(tmp_path):
    path, whole = _whole_model_run(tmp_path)
    set_context(ParallelContext())
    torch.manual_seed(5)
    chunks = build_pipeline_model(dict(MLP_CFG), num_model_chunks=2)  # one process: all layers, in 2 chunks
    engine = Engine(chunks, torch.nn.CrossEntropyLoss(), torch.optim.SGD(chunks.parameters(), lr=0.1),
                    step_schedule=InterleavedPipelineSchedule(2, 2))
    Trainer(engine).resume(path, finetune=True)
    got = {k.split('.', 1)[1]: v for k, v in chunks.state_dict().items()}
    assert set(got) == set(whole) and all(torch.equal(v, whole[k]) for k, v in got.items())
