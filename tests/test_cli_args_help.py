"""The command line's help names each default once: the formatter appends "(default: …)" to every option with a
default, so no option's own help text may say it again."""

import argparse

from linnet import cli


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_option_states_its_default_twice():
    seen = 0
    for p in _parsers(cli.build_parser()):
        for action in p._actions:
            seen += 1
            appended = action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool)
            if appended:  # the formatter adds "(default: …)"
                assert "(default" not in (action.help or ""), (p.prog, action.option_strings, action.help)
            assert "(default None)" not in (action.help or ""), (p.prog, action.option_strings, action.help)
    assert seen > 40  # every subcommand's options were looked at
