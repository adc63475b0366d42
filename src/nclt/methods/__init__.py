"""Methods: declarative compositions of loss terms, schedules, views and heads.

Importing this package registers every method component.
"""

from nclt.methods import (
    multiview,  # noqa: F401
    recipes,  # noqa: F401
)
