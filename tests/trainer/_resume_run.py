"""Exact-resume check for test_checkpoint_hook.py.

``run(ckpt_dir, [])`` trains 4 epochs, saving every epoch and every 5 iterations.
``python -m tests.trainer._resume_run resume CKPT_DIR OUT`` then, in a new process, resumes from
epoch 2 (LoadCheckpointHook) and, separately, from the mid-epoch ``iter_15.pt``
(Trainer.resume), training each to 4 epochs, and saves the results to OUT.
"""
import os
import sys

import torch

from colossal_runner.data import SyntheticClassification, build_dataloader
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (AccuracyHook, LoadCheckpointHook, LossHook,
                                           SaveCheckpointHook)

from ._toy import make_engine


def run(ckpt_dir, extra_hooks, resume_path=None):
    torch.set_num_threads(1)
    engine = make_engine(seed=123, dropout=0.2, in_features=16, num_classes=4)
    dataset = SyntheticClassification(num_samples=48, num_features=16, num_classes=4, seed=0)
    loader = build_dataloader(dict(batch_size=8), dataset, shuffle=True, seed=0)
    hooks = [LossHook(), AccuracyHook(), SaveCheckpointHook(interval=1, checkpoint_dir=ckpt_dir),
             SaveCheckpointHook(interval=5, by_epoch=False, checkpoint_dir=os.path.join(ckpt_dir, 'iter'))]
    trainer = Trainer(engine, hooks=hooks + extra_hooks)
    if resume_path is not None:
        trainer.resume(resume_path)
    trainer.fit(loader, epochs=4)
    return dict(params=[p.detach().clone() for p in engine.model.parameters()],
                states={k: trainer.states[k] for k in ('epoch', 'iteration')}, lr=engine.get_lr(),
                loss=trainer.states['metrics']['train']['Loss'].get_accumulated_value())


def main(mode, ckpt_dir, out):
    if mode == 'resume':
        by_epoch = run(os.path.join(ckpt_dir, 'again'), [LoadCheckpointHook(ckpt_dir, epoch=2)])
        mid_epoch = run(os.path.join(ckpt_dir, 'again_iter'), [],
                        resume_path=os.path.join(ckpt_dir, 'iter', 'iter_15.pt'))
        torch.save(dict(by_epoch=by_epoch, mid_epoch=mid_epoch), out)


if __name__ == '__main__':
    main(*sys.argv[1:])
