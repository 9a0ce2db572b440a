"""Rows of benchmarks/overhead.py for other training frameworks, when they are installed.

None of them is a dependency of colossal_runner: a framework that is not importable simply has
no row. Each row trains exactly what the hand-written loop trains (the same model, optimizer,
LR scheduler stepped every iteration, data loader and seed, from ``make_run``), so it should end
on the same parameters; overhead.py checks that, as for every row, and prints the reason from
``NOTES`` for a framework that does not (Lightning). Each uses its framework's
plain training loop with its own defaults, minus checkpoint files and progress bars, and no
metrics: compare it with "Trainer.fit, no hooks" and with the floor.

Each function takes ``(make_run, dataset, epochs, batch_size, tick)`` and returns
``(final loss, model, None)``; ``tick()`` is called after every iteration.
"""
from __future__ import annotations

import functools
import logging
import tempfile
import warnings
from typing import Callable, Dict


def run_ignite(make_run, dataset, epochs, batch_size, tick):
    import ignite.engine as ie

    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    trainer = ie.create_supervised_trainer(model, optimizer, criterion)
    trainer.add_event_handler(ie.Events.ITERATION_COMPLETED, lambda e: (scheduler.step(), tick()))
    state = trainer.run(loader, max_epochs=epochs)
    return float(state.output), model, None


def run_lightning(make_run, dataset, epochs, batch_size, tick):
    import lightning.pytorch as pl

    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            return criterion(self.net(x), y)

        def configure_optimizers(self):
            return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'}}

    class Tick(pl.Callback):
        loss = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.loss = outputs['loss']
            tick()

    ticker = Tick()
    trainer = pl.Trainer(max_epochs=epochs, accelerator='cpu', devices=1, logger=False, callbacks=[ticker],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    with warnings.catch_warnings():  # e.g. "the dataloader does not have many workers"
        warnings.simplefilter('ignore')
        trainer.fit(Module(), loader)
    return float(ticker.loss), model, None


def run_mmengine(make_run, dataset, epochs, batch_size, tick):
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner

    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, y=None, mode='tensor'):
            out = self.net(x)
            return {'loss': criterion(out, y)} if mode == 'loss' else out

    class Tick(Hook):
        loss = None

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            scheduler.step()  # our scheduler object, so that the arithmetic is the hand loop's
            self.loss = outputs['loss']
            tick()

    ticker = Tick()
    with tempfile.TemporaryDirectory() as work_dir:
        runner = Runner(model=Model(), work_dir=work_dir, train_dataloader=loader,
                        optim_wrapper=OptimWrapper(optimizer),
                        train_cfg=dict(by_epoch=True, max_epochs=epochs),
                        default_hooks=dict(checkpoint=None), custom_hooks=[ticker],
                        log_level='WARNING', randomness=dict(seed=0))
        runner.train()
        logging.getLogger('mmengine').handlers.clear()  # each Runner adds its own
    return float(ticker.loss), model, None


# Why a row may end on other parameters than the hand-written loop, checked by hand.
NOTES = {
    'Lightning': "Lightning ends each epoch after len(loader) batches without asking for one more, so "
                 "torch's RandomSampler never reaches the end of its generator function, where it draws "
                 "from the DataLoader's generator; the second epoch then sees another order. The "
                 "hand-written loop stopped the same way ends on exactly Lightning's parameters.",
}


def optional_contenders(make_run) -> Dict[str, Callable]:
    """``{row name: contender}`` for the frameworks that can be imported here."""
    rows: Dict[str, Callable] = {}
    for name, module, run in (('ignite', 'ignite.engine', run_ignite),
                              ('Lightning', 'lightning.pytorch', run_lightning),
                              ('mmengine', 'mmengine.runner', run_mmengine)):
        try:
            __import__(module)
        except ImportError:
            continue
        rows[name] = functools.partial(run, make_run)
    return rows
