"""A data-parallel training run for the distributed fault test (one process per rank).

    python dp_train.py RANK WORLD PORT CKPT_DIR VICTIM KILL_AT TIMEOUT RESUME OUT

Rank VICTIM SIGKILLs itself in the middle of optimizer step KILL_AT (after the forward pass,
before backward); -1 means nobody is killed. Rank 0 writes the final parameters to OUT.
"""
import os
import signal
import sys

import torch
from torch import nn

from colossal_runner.data import SyntheticClassification, build_dataloader
from colossal_runner.distributed import launch, teardown, wrap_data_parallel
from colossal_runner.engine import Engine
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import SaveCheckpointHook

rank, world, port, ckpt_dir, victim, kill_at, timeout, resume, out = sys.argv[1:10]
rank, world, victim, kill_at = int(rank), int(world), int(victim), int(kill_at)
torch.set_num_threads(1)
# A short heartbeat timeout: the survivors name the killed rank within ~3 s.
context = launch(dict(dist_timeout=float(timeout), fault_watch=dict(heartbeat_timeout=3.0)), rank, world,
                 '127.0.0.1', int(port))
torch.manual_seed(0)
model = wrap_data_parallel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), context)
calls = [0]


def criterion(output, label):
    calls[0] += 1
    if rank == victim and calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return nn.functional.cross_entropy(output, label)


engine = Engine(model, criterion, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
dataset = SyntheticClassification(num_samples=64, num_features=4, num_classes=2, seed=0)
loader = build_dataloader(dict(batch_size=4), dataset, context=context, shuffle=True, seed=0)
trainer = Trainer(engine, hooks=[SaveCheckpointHook(interval=2, by_epoch=False, checkpoint_dir=ckpt_dir)])
if resume == '1':
    trainer.resume(ckpt_dir)
trainer.fit(loader, epochs=2)
if rank == 0:
    torch.save([p.detach().clone() for p in engine.model.parameters()], out)
teardown()
