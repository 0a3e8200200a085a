"""The command line's small manners (issue 23): --version, a closed pipe, --quiet for transformers' bars,
defaults in every --help."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from slimkit import __version__
from slimkit.cli import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"slimkit {__version__}"


def test_a_closed_pipe_ends_quietly():
    # ``slimkit compress --list | head -1``: head leaves after one line
    done = subprocess.run(f"{sys.executable} -m slimkit.cli compress --list | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_quiet_silences_transformers_loading_bars():
    from slimkit.progress import set_quiet

    set_quiet(True)
    try:
        import transformers

        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        set_quiet(False)


def test_every_option_with_a_default_shows_it():
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for verb, sub in verbs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, [], (), argparse.SUPPRESS):
                if "default" not in formatter._get_help_string(action):
                    missing.append(f"{verb} {action.option_strings[0]}")
    assert not missing


def test_training_on_no_data_says_so():
    from slimkit import UserInputError, train
    from slimkit.models import from_spec

    with pytest.raises(UserInputError, match="the training data is empty"):
        train(from_spec("mlp:hidden=8"), [])
