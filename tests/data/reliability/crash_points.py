"""Imported by the crash-safety test's config (custom_imports): makes one checkpoint save slow.

With ``CR_SLOW_SAVE_AT=N`` the N-th ``torch.save`` of the process writes half of the checkpoint,
creates the file named by ``CR_MARKER`` and sleeps, so the test can SIGKILL the process in the
middle of writing a checkpoint. Without the variable nothing is changed.
"""
import io
import os
import time

import torch

_AT = int(os.environ.get('CR_SLOW_SAVE_AT', '0'))
_calls = [0]
_real_save = torch.save


def _slow_save(obj, f, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] != _AT or not hasattr(f, 'write'):
        return _real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    _real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[:len(data) // 2])
    f.flush()
    with open(os.environ['CR_MARKER'], 'w') as marker:
        marker.write('saving')
    time.sleep(30)  # killed here
    f.write(data[len(data) // 2:])


if _AT:
    torch.save = _slow_save
