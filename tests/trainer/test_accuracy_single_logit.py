"""A single-logit binary output [B, 1] is refused by Accuracy (its argmax is always class 0), and the
binary-accuracy metric docs/hooks.md offers instead counts the thresholded logit."""
import os
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.engine import Engine
from colossal_runner.registry import METRICS
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import MetricHook
from colossal_runner.trainer.metrics import Accuracy, Metric, reduce_over_data_group

DOC = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'hooks.md')


def _binary_setup():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = (x[:, 0] > 0).float().unsqueeze(1)  # [B, 1] float labels, as BCEWithLogitsLoss takes them
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    engine = Engine(model, nn.BCEWithLogitsLoss(), torch.optim.SGD(model.parameters(), lr=0.5))
    return engine, DataLoader(TensorDataset(x, y), batch_size=20), x, y


@pytest.mark.parametrize('defer_steps', [16, 1])
def test_accuracy_refuses_one_score_per_sample(defer_steps):
    metric = Accuracy(defer_steps=defer_steps)
    with pytest.raises(ValueError, match=r'1 score\(s\) per sample \(output shape \(4, 1\)\).*C >= 2.*'
                                         r'share of samples labelled 0.*BCEWithLogitsLoss.*docs/hooks.md'):
        metric.update(torch.randn(4, 1), torch.tensor([[0.], [1.], [1.], [0.]]))


def test_accuracy_hook_fails_at_the_first_step_of_a_single_logit_model():
    engine, loader, _, _ = _binary_setup()
    trainer = Trainer(engine, hooks=[dict(type='LossHook'), dict(type='AccuracyHook')])
    with pytest.raises(ValueError, match='1 score') as info:
        trainer.fit(loader, epochs=1)
    assert trainer.states['iteration'] == 1
    assert any('AccuracyHook.after_train_iter' in note for note in getattr(info.value, '__notes__', []))


def test_two_class_scores_are_still_counted():
    metric = Accuracy()
    metric.update(torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
    assert metric.get_accumulated_value() == pytest.approx(2 / 3)


def _doc_binary_accuracy():
    text = open(DOC, encoding='utf-8').read()
    block = re.search(r'```python\n(@METRICS\.register_module\(\)\nclass BinaryAccuracy.*?)```', text, re.S)
    # Not registered: the test builds the class itself, and METRICS keeps one class per name.
    code = block.group(1).replace('@METRICS.register_module()\n', '')
    namespace = dict(torch=torch, METRICS=METRICS, Metric=Metric,
                     reduce_over_data_group=reduce_over_data_group)
    exec(compile(code, DOC, 'exec'), namespace)
    return namespace['BinaryAccuracy']


def test_the_documented_binary_accuracy_counts_thresholded_logits():
    engine, loader, x, y = _binary_setup()
    hook = MetricHook(metric=_doc_binary_accuracy(), name='BinaryAccuracy')
    trainer = Trainer(engine, hooks=[dict(type='LossHook'), hook])
    trainer.fit(loader, epochs=5)
    with torch.no_grad():
        expected = ((engine.model(x) > 0).float() == y).float().mean().item()
    assert expected > 0.9  # a real classifier, not the share of one label
    assert trainer.evaluate(loader)['BinaryAccuracy'] == pytest.approx(expected)


def test_the_documented_binary_accuracy_reads_the_latest_steps_value_per_step():
    metric = _doc_binary_accuracy()()
    metric.update(torch.tensor([1.0, -1.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 1.0]), None)  # 4 of 4
    metric.update(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), None)  # 0 of 2
    assert metric.get_last_step_value() == 0.0  # the latest step, not the epoch so far
    assert metric.get_accumulated_value() == pytest.approx(4 / 6)
