"""The argparse types of xmodal.arguments and surrogate._checks.check_count: each rejects what
its kind excludes with a message naming the bound, and returns the parsed value otherwise."""

import re
from argparse import ArgumentTypeError

import numpy as np
import pytest

from surrogate._checks import check_count
from xmodal import arguments as a


@pytest.mark.parametrize("parse, text, message", [
    (a.positive_int, "0", "must be >= 1, got '0'"),
    (a.positive_int, "1.5", "not an integer: '1.5'"),
    (a.nonnegative_int, "-1", "must be >= 0"),
    (a.int_at_least(2), "1", "must be >= 2"),
    (a.seed_int, str(2**63), "must be in -2**63 .. 2**63 - 1"),
    (a.finite_float, "inf", "must be finite"),
    (a.finite_float, "x", "not a number"),
    (a.positive_float, "0", "must be positive"),
    (a.nonnegative_float, "-0.1", "must be >= 0"),
    (a.unit_float, "1.5", "must be in [0, 1]"),
    (a.float_in(0, 1000), "-1", "must be in [0, 1000]"),
    (a.int_list, " , ", "expected at least one integer"),
    (a.int_list, "1,b", "expected comma-separated integers"),
    (a.sizes_list, "50", "need >= 2 positive sizes"),
    (a.float_list, "1,nan", "must be finite"),
    (a.names_list, "audio", "expected >= 2 comma-separated names"),
    (a.json_object, "[1]", "expected a JSON object"),
])
def test_types_reject_what_their_kind_excludes(parse, text, message):
    with pytest.raises(ArgumentTypeError, match=re.escape(message)):
        parse(text)


def test_types_return_the_parsed_value():
    assert a.positive_int("3") == 3 and a.nonnegative_int("0") == 0
    assert a.int_at_least(2)("2") == 2 and a.seed_int(str(-(2**63))) == -(2**63)
    assert a.unit_float("1") == 1.0 and a.float_in(0, 1000)("1e3") == 1000.0
    assert a.int_list("0, 2,") == (0, 2) and a.sizes_list("6,8") == (6, 8)
    assert a.names_list("audio, vision") == ("audio", "vision")
    assert a.json_object('{"k": 1}') == {"k": 1}


def test_check_count():
    assert check_count(np.int64(3), "n") == 3 and type(check_count(np.int64(3), "n")) is int
    for bad in (True, 2.0, 0, "3"):
        message = re.escape(f"n must be an integer >= 1, got n={bad!r}")
        with pytest.raises(ValueError, match=message):
            check_count(bad, "n")
