"""A resume compares the config's learning rate with the checkpoint's, not the LR a hook or a
scheduler moved it to: the ReduceLROnPlateau recipe of docs/lr_scheduler.md resumes without the
"optimizer settings differ" warning, and a changed optimizer.lr still warns."""
import io

import pytest
import torch
from torch import nn

from colossal_runner.engine import Engine

DIFFER = "optimizer: the checkpoint's settings are kept, and differ from this run's config"


def make_engine(lr=1.0, scheduler=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return Engine(model, nn.MSELoss(), optimizer,
                  lr_scheduler=scheduler(optimizer) if scheduler is not None else None)


def plateau_checkpoint(lr=1.0):
    """A run whose LR a ReduceLROnPlateau hook lowered twice, saved and read back as a resume does."""
    engine = make_engine(lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(engine.optimizer, factor=0.5, patience=0)
    engine.step(iter([(torch.ones(4, 3), torch.zeros(4, 2))]))
    for metric in (1.0, 2.0, 3.0):  # worse twice: 1.0 -> 0.5 -> 0.25
        plateau.step(metric)
    assert engine.get_lr() == 0.25
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_an_lr_a_hook_lowered_resumes_without_a_warning(project_log):
    state = plateau_checkpoint()
    resumed = make_engine()
    resumed.load_state_dict(state)
    assert resumed.get_lr() == 0.25  # the checkpoint's LR, as before
    assert DIFFER not in project_log.text  # before: lr=0.25 (config: 1.0), suggesting finetune=True


def test_a_changed_config_lr_still_warns(project_log):
    state = plateau_checkpoint()
    make_engine(lr=0.5).load_state_dict(state)
    assert f'{DIFFER}: lr=1.0 (config: 0.5)' in project_log.text


def test_a_checkpoint_without_initial_lr_warns_once_then_records_it(project_log):
    """A checkpoint from before the Engine recorded initial_lr cannot tell; the resumed optimizer
    takes this run's, so its own checkpoints resume quietly."""
    state = plateau_checkpoint()
    for group in state['optimizer']['param_groups']:
        del group['initial_lr']
    resumed = make_engine()
    resumed.load_state_dict(state)
    assert f'{DIFFER}: lr=0.25 (config: 1.0)' in project_log.text
    assert resumed.state_dict()['optimizer']['param_groups'][0]['initial_lr'] == 1.0  # this run's config
    project_log.lines.clear()
    make_engine().load_state_dict(resumed.state_dict())
    assert DIFFER not in project_log.text


@pytest.mark.parametrize('build', [
    lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2.0, total_steps=10),
    lambda opt: torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=2),
])
def test_schedulers_keep_their_own_initial_lr_and_schedule(build):
    """The Engine records initial_lr only where no scheduler did: a scheduler built first keeps its
    value (OneCycleLR's max_lr / div_factor), and its learning rates are torch's own."""
    engine = make_engine(scheduler=build)
    torch.manual_seed(0)
    reference = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=1.0, momentum=0.9)
    ref_scheduler = build(reference)
    assert engine.optimizer.param_groups[0]['initial_lr'] == reference.param_groups[0]['initial_lr']
    for _ in range(5):
        engine.step(iter([(torch.ones(4, 3), torch.zeros(4, 2))]))
        reference.step()
        ref_scheduler.step()
        assert engine.get_lr() == reference.param_groups[0]['lr']


def test_a_scheduler_built_after_the_engine_takes_its_own_base_rate():
    """The Engine keeps the config's rate for its checkpoints without writing it into the optimizer,
    where a torch scheduler built later would take it as its base rate (CyclicLR started at max_lr)."""
    engine = make_engine()
    assert 'initial_lr' not in engine.optimizer.param_groups[0]
    scheduler = torch.optim.lr_scheduler.CyclicLR(engine.optimizer, base_lr=0.001, max_lr=0.1, step_size_up=2)
    assert engine.optimizer.param_groups[0]['lr'] == pytest.approx(0.001)
    assert scheduler.base_lrs == [pytest.approx(0.001)]
