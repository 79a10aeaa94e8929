"""``check_int``: the shared check for integer arguments and config fields with a lower bound."""

from __future__ import annotations

import numpy as np

__all__ = ["check_int"]


def check_int(name: str, value: object, minimum: int = 1, *, numpy: bool = True, hint: str = "") -> int:
    """``value`` as an ``int``, checked to be an integer >= ``minimum``.

    ``int`` is accepted, ``np.integer`` too when ``numpy`` is true, ``bool`` never. Anything else raises
    ``ValueError`` naming ``name``, with ``hint`` (what the value means) in parentheses after the bound.
    """
    types = (int, np.integer) if numpy else (int,)
    if isinstance(value, bool) or not isinstance(value, types) or value < minimum:
        detail = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{detail}, got {value!r}.")
    return int(value)
