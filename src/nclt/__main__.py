"""``python -m nclt`` (and ``torchrun -m nclt``) runs the command line."""

import sys

from nclt.cli import main

sys.exit(main())
