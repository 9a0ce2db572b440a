"""Fixtures shared by the whole suite."""
import logging

import pytest


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    @property
    def text(self):
        return '\n'.join(self.lines)


@pytest.fixture
def project_log():
    """What the 'colossal_runner' logger writes during the test (``.lines``, ``.text``).

    pytest's caplog sees it only while the logger propagates, which it stops doing once a
    Trainer has set up its handlers (utils/logging.get_logger): a handler of its own works either way.
    """
    logger = logging.getLogger('colossal_runner')
    handler = _Lines()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
