"""Print a config after ``_base_`` inheritance and ``--cfg-options`` overrides are applied.

    python tools/print_config.py configs/digits/mlp.py --cfg-options optimizer.lr=0.05

A bad config prints one line saying what is wrong and exits with status 2 (``--debug``
shows the traceback instead).
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from colossal_runner.config import Config, DictAction, config_error_exit
from colossal_runner.config.config import import_custom


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Print the merged config.')
    parser.add_argument('config', help='config file (.py, .json, .yaml or .yml)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='override config values, e.g. optimizer.lr=0.05 hooks.0.interval=10; '
                             'may be given several times')
    parser.add_argument('--format', choices=['py', 'json', 'yaml'], default='py',
                        help='output format (default: py, the pretty text)')
    parser.add_argument('--debug', action='store_true', help='show the full traceback on errors')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    with config_error_exit(debug=args.debug, prog='print_config.py'):
        cfg = Config.fromfile(args.config, import_custom_modules=False)  # imported after the merge
        cfg.merge_from_dict(args.cfg_options)
        if cfg.get('custom_imports', None):  # so that --cfg-options can change or drop them
            import_custom(cfg.custom_imports, cfg.filename)
        text = cfg.pretty_text if args.format == 'py' else cfg._dump_text('.' + args.format)
    print(text, end='' if text.endswith('\n') else '\n')


if __name__ == '__main__':
    main()
