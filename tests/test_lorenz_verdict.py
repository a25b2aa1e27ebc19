"""The verdict function on planted planes: a null, a positive and a negative effect."""

import numpy as np
import pytest

from lorenz.verdict import verdict


def test_null_effect_is_no_detectable_effect():
    rng = np.random.default_rng(0)
    words = [verdict(rng.normal(0, 0.1, 6), margin=0.05).word for _ in range(200)]
    # a null can cross the margin only when the interval misses 0 by more than m: rare
    assert words.count("no detectable effect") >= 195


@pytest.mark.parametrize("sign, word", [(1, "supported"), (-1, "contradicted")])
def test_planted_effect_is_found_with_its_sign(sign, word):
    rng = np.random.default_rng(1)
    v = verdict(sign * 0.5 + rng.normal(0, 0.05, 5), margin=0.1)
    assert v.word == word and v.lo < sign * 0.5 < v.hi and v.n == 5


def test_effect_inside_the_margin_is_no_detectable_effect():
    v = verdict([0.031, 0.029, 0.030, 0.030], margin=0.05)  # detectable but below the margin
    assert v.lo > 0 and v.word == "no detectable effect"


def test_interval_is_the_t_interval():
    v = verdict([1.0, 2.0, 3.0], margin=0.1)
    assert v.effect == 2.0 and v.hi - v.effect == pytest.approx(4.302653 * 1 / np.sqrt(3))


def test_bad_input():
    with pytest.raises(ValueError, match="paired effects"):
        verdict([1.0], 0.1)
    with pytest.raises(ValueError, match="margin"):
        verdict([1.0, 2.0], 0.0)
