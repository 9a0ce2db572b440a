"""The hook written out in docs/hooks.md ("Writing a hook") does what the page says."""
import os
import re

import pytest
import torch

from colossal_runner.trainer import Trainer

from ._toy import make_dataset, make_engine

DOC = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'hooks.md')


def _doc_hook_class():
    text = open(DOC, encoding='utf-8').read()
    section = text[text.index('## Writing a hook'):]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    # Not registered: the test builds the class itself, and HOOKS keeps one class per name.
    code = code.replace('@HOOKS.register_module()\n', '')
    namespace = {}
    exec(compile(code, DOC, 'exec'), namespace)
    return namespace['StopOnNaNHook']


def test_the_stop_on_nan_example_stops_a_run_that_skips_nan_steps():
    data, labels = make_dataset(40).tensors
    data[8:] = float('nan')  # finite for the first 2 steps of 4 samples, NaN from the third on
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels), batch_size=4)
    hook = _doc_hook_class()(patience=3)
    trainer = Trainer(make_engine(nonfinite_loss='skip'), hooks=[hook])
    with pytest.raises(FloatingPointError, match='3 steps in a row had a NaN/Inf loss, the last at '
                                                 'iteration 5'):
        trainer.fit(loader, epochs=2)
    assert trainer.states['nonfinite_skips'] == 3
    assert hook.state_dict() == dict(skips_seen=3, in_a_row=3)
