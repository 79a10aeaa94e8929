"""``check_int``: integers at or above the bound pass as ``int``, everything else raises a named ``ValueError``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dyaug.validation import check_int


def test_accepts_integers_at_or_above_the_minimum_and_returns_python_ints():
    assert check_int("n", 1) == 1
    assert check_int("seed", 0, 0) == 0
    value = check_int("batch_size", np.int64(7))
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, 0, -2])
def test_rejects_bools_non_integers_and_values_below_the_minimum(value):
    with pytest.raises(ValueError, match=rf"^Config\.width must be an integer >= 1, got {re.escape(repr(value))}\.$"):
        check_int("Config.width", value)


def test_numpy_integers_only_when_allowed_and_the_hint_follows_the_bound():
    three, one = np.int64(3), np.int32(1)
    with pytest.raises(ValueError, match=f"^{re.escape(f'horizon must be an integer >= 1, got {three!r}.')}$"):
        check_int("horizon", three, numpy=False)
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'n must be an integer >= 2 (states per rollout), got {one!r}.')}$"
    ):
        check_int("n", one, 2, hint="states per rollout")
