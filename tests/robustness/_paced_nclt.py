"""``python -m nclt`` with every training step paced (20 ms), for the signal tests.

A digits epoch takes ~0.1 s; pacing makes a 12-epoch run last long enough to be
interrupted in a chosen epoch. The pause is taken inside the step (where a real run spends
its time: forward, backward, optimizer), not while the DataLoader is asked for the next
batch, so that a signal lands where it would in a real run. Everything else is the real CLI
(``runpy`` runs ``nclt`` as ``__main__``, as ``python -m nclt`` does).
"""

import runpy
import time

import nclt.engine as engine

PACE_S = 0.02
_real = engine.set_lr  # called once per step, after the batch has been fetched


def _paced(*args, **kwargs):
    time.sleep(PACE_S)
    return _real(*args, **kwargs)


engine.set_lr = _paced
runpy.run_module("nclt", run_name="__main__", alter_sys=True)
