"""Train from a config file; see ``colossal_runner/train.py`` (same as ``colossal-train``)."""
from colossal_runner.train import main

if __name__ == '__main__':
    main()
