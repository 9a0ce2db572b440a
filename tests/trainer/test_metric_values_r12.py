"""Metric values read as Python floats, and the messages of Metric base-class mistakes."""
import pytest
import torch

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import MetricHook
from colossal_runner.trainer.metrics import Metric

from ._toy import make_engine, make_loader


class MeanLoss(Metric):
    """Returns the mean loss as ``shape`` tensors: the classic custom-metric mistake."""
    shape = ()

    def reset(self):
        self.sums = self.zeros(2)

    def update(self, output, label, loss):
        self.sums += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64)])

    def get_accumulated_value(self):
        mean = self.sums[0] / self.sums[1]
        return mean.expand(self.shape) if self.shape else mean

    get_last_step_value = get_accumulated_value


class MeanLoss1(MeanLoss):
    shape = (1,)


class PerClass(MeanLoss):
    shape = (3,)


@pytest.mark.parametrize('metric', [MeanLoss, MeanLoss1])
def test_a_getter_returning_a_one_element_tensor_gives_floats(metric):
    trainer = Trainer(make_engine(), hooks=[MetricHook(metric=metric),
                                            dict(type='LogMetricByStepHook', interval=1),
                                            dict(type='LogMetricByEpochHook')])
    trainer.fit(make_loader(8), epochs=1)
    values = trainer.evaluate(make_loader(8))
    assert type(values[metric.__name__]) is float


def test_a_getter_returning_a_vector_is_a_type_error_naming_the_metric_and_the_getter():
    trainer = Trainer(make_engine(), hooks=[MetricHook(metric=PerClass)])
    with pytest.raises(TypeError) as info:
        trainer.evaluate(make_loader(8))
    message = str(info.value)
    assert message.startswith('PerClass.get_accumulated_value() must return a number')
    assert 'got a Tensor of shape (3,)' in message and '.item()' in message
    trainer = Trainer(make_engine(), hooks=[MetricHook(metric=PerClass, modes=('train',)),
                                            dict(type='LogMetricByStepHook', interval=1)])
    with pytest.raises(TypeError, match=r'PerClass\.get_last_step_value\(\) must return a number'):
        trainer.fit(make_loader(8), epochs=1)


def test_the_default_hooks_read_no_metric_per_iteration():
    def reads(steps):
        hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LRSchedulerHook'),
                 dict(type='LogMetricByEpochHook')]
        trainer = Trainer(make_engine(), hooks=hooks)
        counts = {'reads': 0}
        for table in trainer.states['metrics'].values():
            for metric in table.values():
                for getter in ('get_accumulated_value', 'get_last_step_value'):
                    def counted(original=getattr(metric, getter)):
                        counts['reads'] += 1
                        return original()
                    setattr(metric, getter, counted)
        trainer.fit(make_loader(4 * steps), epochs=1)
        return counts['reads']

    assert reads(2) == reads(6) > 0  # per epoch, whatever the number of steps


def test_unimplemented_metric_methods_name_the_class_and_the_method():
    class EpochOnlyByMistake(MeanLoss):
        get_last_step_value = Metric.get_last_step_value

    with pytest.raises(NotImplementedError, match=r'EpochOnlyByMistake\.get_last_step_value\(\) is not '
                                                  r'implemented.*epoch_only=True'):
        EpochOnlyByMistake().get_last_step_value()
    trainer = Trainer(make_engine(), hooks=[MetricHook(metric=EpochOnlyByMistake),
                                            dict(type='LogMetricByStepHook', interval=1)])
    with pytest.raises(NotImplementedError, match='epoch_only=True'):
        trainer.fit(make_loader(8), epochs=1)

    class Bare(Metric):
        pass

    with pytest.raises(NotImplementedError, match=r'Bare\.reset\(\) is not implemented'):
        Bare()

    class OnlyReset(Metric):
        def reset(self):
            pass

    metric = OnlyReset()
    with pytest.raises(NotImplementedError, match=r'OnlyReset\.update\(\) is not implemented'):
        metric.update(None, None, None)
    with pytest.raises(NotImplementedError, match=r'OnlyReset\.get_accumulated_value\(\) is not implemented'):
        metric.get_accumulated_value()


def test_a_metric_that_did_not_call_super_init_is_a_type_error_saying_so():
    class Hits(Metric):
        def __init__(self, num_classes=3):
            self.num_classes = num_classes  # no super().__init__()

        def reset(self):
            self.hits = self.zeros(self.num_classes)

    with pytest.raises(TypeError, match=r'Hits\.__init__ did not call super\(\)\.__init__\(\).*'
                                        r'super\(\)\.__init__\(\*\*kwargs\)'):
        Hits()
    with pytest.raises(TypeError, match='did not call super'):
        MetricHook(metric=Hits)
