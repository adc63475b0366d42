"""nclt: long-tailed classification through neural collapse.

Losses, methods, data, training engine and neural-collapse diagnostics for the methods of
AllNC, INC, DisA, ARB-Loss and BCL, and the baselines they compare against.
"""

__version__ = "0.1.0"
