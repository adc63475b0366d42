"""``python -m nclt`` with every training step paced (20 ms), for the signal tests.

A digits epoch takes ~0.1 s; pacing makes a 12-epoch run last long enough to be
interrupted in a chosen epoch. Everything else is the real CLI (``runpy`` runs ``nclt`` as
``__main__``, as ``python -m nclt`` does).
"""

import runpy
import time

import nclt.runner as runner

PACE_S = 0.02
_real = runner.train_one_epoch


def _paced(env, loader, *args, **kwargs):
    def batches():
        for batch in loader:
            time.sleep(PACE_S)
            yield batch

    return _real(env, batches(), *args, **kwargs)


runner.train_one_epoch = _paced
runpy.run_module("nclt", run_name="__main__", alter_sys=True)
