import os

import pytest


@pytest.fixture
def no_fsync(monkeypatch):
    """fsync makes checkpoint files durable, which in-process resume checks do not need; it is slow here."""
    monkeypatch.setattr(os, 'fsync', lambda fd: None)
