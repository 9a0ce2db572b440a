"""Evaluate a checkpoint; see ``colossal_runner/test.py`` (same as ``colossal-test``)."""
from colossal_runner.test import main

if __name__ == '__main__':
    main()
