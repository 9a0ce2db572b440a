"""Runs tools/train.py and tools/test.py once per case, each case in its own process forked from
this one once torch and colossal_runner are imported (tests/reliability/test_bad_input.py).

Each case is still a separate process running the tool's script as ``__main__`` with its own
argv, working directory, stdout, stderr and exit status; what the fork saves is the torch import
every case would repeat (about 3 s of each run on a 2-core machine, with 30 cases in the table).
This process runs no tensor operation before it forks, so no thread pool is inherited.

stdin: a JSON list of ``{"tool": path, "args": [...], "cwd": dir, "timeout": seconds}``;
``sys.argv[1]``: how many cases run at once. stdout: a JSON list, in the same order, of
``{"returncode": int or null, "stdout": str, "stderr": str, "timed_out": bool}``.
"""
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

import torch  # noqa: F401  (imported once here: the cost the fork saves)

import colossal_runner.initialize  # noqa: F401
import colossal_runner.test  # noqa: F401
import colossal_runner.train  # noqa: F401


def run_case(case, out_fd, err_fd):
    """In the forked child: become ``python <tool> <args>`` in ``cwd``; never returns."""
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(case['cwd'])
        sys.argv = [case['tool'], *case['args']]
        sys.path.insert(0, os.path.dirname(os.path.abspath(case['tool'])))  # as `python tools/x.py` does
        try:
            runpy.run_path(case['tool'], run_name='__main__')
            code = 0
        except SystemExit as exc:  # what the interpreter does with it at exit
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - printed as the interpreter would print it
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main():
    cases = json.load(sys.stdin)
    at_once = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    results = [None] * len(cases)
    running = {}  # pid -> (index, started, stdout file, stderr file)
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < at_once:
            index = pending.pop(0)
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_case(cases[index], out.fileno(), err.fileno())
            running[pid] = (index, time.monotonic(), out, err)
        time.sleep(0.02)
        for pid, (index, started, out, err) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = not done and time.monotonic() - started > cases[index]['timeout']
            if timed_out:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            elif not done:
                continue
            del running[pid]
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read().decode('utf-8', errors='replace'))
                f.close()
            results[index] = dict(returncode=None if timed_out else os.waitstatus_to_exitcode(status),
                                  stdout=texts[0], stderr=texts[1], timed_out=timed_out)
    json.dump(results, sys.stdout)


if __name__ == '__main__':
    main()
