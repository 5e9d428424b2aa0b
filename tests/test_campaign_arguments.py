"""The campaign commands' shared argument types (amp_fl.experiments.cli): one clear argparse error each."""

from __future__ import annotations

import argparse

import pytest

from amp_fl.experiments import headline, ota_imp, reproduce, tune
from amp_fl.experiments.cli import one_seed, positive_int, seed_list


def test_positive_int_takes_whole_numbers_from_one():
    assert positive_int("3") == 3
    for bad in ("0", "-1", "2.5", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match=">= 1"):
            positive_int(bad)


def test_seeds_are_distinct_whole_numbers_from_zero():
    assert seed_list("0, 7,3") == (0, 7, 3) and one_seed("5") == 5
    for bad in ("", "1,1", "-1", "0,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="one seed"):
        one_seed("1,2")


@pytest.mark.parametrize(
    ("main", "argv", "problem"),
    [
        (headline.main, ["screen", "--jobs", "0"], "argument --jobs: a whole number >= 1"),
        (headline.main, ["tune", "--trials", "0"], "argument --trials: a whole number >= 1"),
        (headline.main, ["evaluate", "--seeds", "-1"], "argument --seeds: distinct seeds >= 0"),
        (ota_imp.main, ["residual", "--jobs", "0"], "argument --jobs: a whole number >= 1"),
        (ota_imp.main, ["residual", "--seeds", "0", "0"], "--seeds: distinct seeds"),
        (reproduce.main, ["quick", "--jobs", "0"], "argument --jobs: a whole number >= 1"),
        (tune.main, ["amp_fl", "--seeds", "1,1"], "argument --seeds: distinct seeds >= 0"),
        (tune.main, ["amp_fl", "--rounds", "0"], "argument --rounds: a whole number >= 1"),
    ],
)
def test_a_bad_count_or_seed_stops_the_command_before_any_run(main, argv, problem, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and problem in capsys.readouterr().err
