"""Each pipeline stage draws its own dropout masks (seed + 100 * stage once the run is built), while
its weights still equal the whole model's, both stages read the same batches, and an interrupted,
resumed run equals the uninterrupted one. One 2-process launch runs every check."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from colossal_runner.testing import run_distributed
from colossal_runner.testing.hooks import StopAfterIteration, StopTraining

SEED = 11
# 14 layers, 7 alike per stage; a Sigmoid output is never 0 unless dropped
MODEL = dict(type='MLP', in_features=16, hidden=(16, 16, 16, 16), num_classes=16, dropout=0.5,
             activation='Sigmoid')
STEPS_PER_EPOCH, EPOCHS, STOP_AT = 6, 2, 8  # 24 samples, batches of 4; checkpoints every 4 steps


def _config():
    return dict(model=dict(MODEL, partition='uniform'), loss=dict(type='CrossEntropyLoss'),
                optimizer=dict(type='SGD', lr=0.5, momentum=0.9),
                data=dict(train=dict(dataset=dict(type='SyntheticClassification', num_samples=24,
                                                  num_features=16, num_classes=16),
                                     dataloader=dict(batch_size=4, shuffle=True))),
                schedule=dict(type='PipelineSchedule', num_microbatches=2), parallel=dict(pipeline=2),
                max_epochs=EPOCHS, seed=SEED,
                hooks=[dict(type='SaveCheckpointHook', interval=4, by_epoch=False)])


def _worker(rank, world_size, root):
    from colossal_runner.distributed import set_seed
    from colossal_runner.initialize import initialize
    from colossal_runner.registry import MODELS

    def params(run):
        return {n: p.detach().clone() for n, p in run.engine.model.named_parameters()}

    set_seed(SEED)
    whole = dict(MODELS.build(dict(MODEL)).named_parameters())  # before initialize, which seeds again
    # 1. uninterrupted, recording the dropout masks of the first step
    run = initialize(_config(), work_dir=f'{root}/whole', log_file=False)
    built = params(run)
    init_err = max((p - whole[n]).abs().max().item() for n, p in built.items())
    masks = []
    for module in run.engine.model.modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_hook(lambda m, i, out: masks.append((out != 0).int()) if len(masks) < 4
                                         else None)
    run.trainer.fit(run.train_dataloader, EPOCHS)
    uninterrupted = params(run)
    # the global RNG now differs between the stages; the loader's order must not
    run.train_dataloader.sampler.set_epoch(1)
    order = torch.cat([y for _, y in run.train_dataloader])

    # 2. stopped after the checkpoint of step 8, then resumed from it by a fresh run
    run = initialize(_config(), work_dir=f'{root}/resumed', log_file=False)
    run.trainer.register_hook(StopAfterIteration(STOP_AT))
    try:
        run.trainer.fit(run.train_dataloader, EPOCHS)
    except StopTraining:
        pass
    run = initialize(_config(), work_dir=f'{root}/resumed', log_file=False)
    run.trainer.resume(f'{root}/resumed/checkpoints/iter_{STOP_AT}.pt')
    run.trainer.fit(run.train_dataloader, EPOCHS)
    resumed = params(run)
    return dict(stage=rank, init_err=init_err, masks=masks, order=order,
                resume_equal=sorted(resumed) == sorted(uninterrupted) and all(
                    torch.equal(resumed[n], uninterrupted[n]) for n in resumed),
                trained=any(not torch.equal(uninterrupted[n], built[n]) for n in built))


@pytest.mark.timeout(240)
def test_stages_draw_their_own_dropout_masks_and_resume_exactly(tmp_path):
    stage0, stage1 = run_distributed(_worker, 2, str(tmp_path), timeout=200)
    for res in (stage0, stage1):
        assert res['init_err'] == 0.0, res['stage']  # the reseed comes after the build
        assert res['trained'] and res['resume_equal'], res['stage']
    assert torch.equal(stage0['order'], stage1['order'])  # both stages still read the same batches
    # stage 0's dropout layers 3 and 6 and stage 1's layers 9 and 12 see the same shapes; their masks
    # (2 microbatches x 2 layers in the first step) were equal when both stages drew the same numbers
    assert len(stage0['masks']) == len(stage1['masks']) == 4
    for a, b in zip(stage0['masks'], stage1['masks']):
        assert a.shape == b.shape and not torch.equal(a, b)
