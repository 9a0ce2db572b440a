"""predict given an (input, label) batch by mistake says that it takes the model's input."""
import pytest
import torch

from colossal_runner.trainer import Trainer

from ._toy import make_engine, make_loader


def test_predict_given_a_loader_batch_says_it_takes_the_models_input():
    trainer = Trainer(make_engine())
    batch = next(iter(make_loader(8)))
    with pytest.raises(TypeError) as caught:
        trainer.predict(batch)
    message = str(caught.value)
    assert 'list of 2 items' in message and 'not a (input, label) batch' in message
    assert 'trainer.predict(batch[0])' in message
    assert isinstance(caught.value.__cause__, TypeError)  # torch's own message, chained
    assert 'positional arguments' in message  # and repeated
    assert trainer.predict(batch[0]).shape == (4, 3)  # the input alone works


def test_predict_keeps_a_type_error_of_a_single_tensor_input_as_it_is():
    class Fails(torch.nn.Module):
        def forward(self, x):
            raise TypeError('from the model')

    engine = make_engine()
    engine.model = Fails()
    with pytest.raises(TypeError, match='^from the model$'):
        Trainer(engine).predict(torch.ones(2, 8))
