"""Commands that take Beam pipeline options beside their own, without swallowing typos.

A `BeamCommand` hands Beam the options Beam's own `PipelineOptions` classes declare (e.g.
`--runner`, `--project`, `--temp_location`) and everything after `--`; any other unknown option
is click's usual error with its suggestion ("Did you mean --min-score?"), never silently passed
on to Beam.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import click


@functools.cache
def beam_flags() -> dict[str, bool]:
    """Every option string Beam's registered PipelineOptions classes declare, and whether it
    takes a value (store_true flags such as --streaming do not)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pending = [PipelineOptions]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        # An option two classes both declare raises; the first declaration is enough.
        with contextlib.suppress(argparse.ArgumentError):
            cls._add_argparse_args(parser)
    return {
        option: action.nargs != 0
        for option, action in parser._option_string_actions.items()
        if option.startswith("--")
    }


def split_beam_args(args: list[str], own: set[str]) -> tuple[list[str], list[str]]:
    """(this command's arguments, Beam's): Beam gets its known options and all after `--`."""
    mine: list[str] = []
    beam: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            beam.extend(args[index + 1 :])
            break
        name = token.split("=", 1)[0]
        if token.startswith("--") and name not in own and name in beam_flags():
            beam.append(token)
            takes_value = beam_flags()[name] and "=" not in token and index + 1 < len(args)
            if takes_value and not args[index + 1].startswith("-"):
                beam.append(args[index + 1])
                index += 1
        else:
            mine.append(token)
        index += 1
    return mine, beam


class BeamCommand(click.Command):
    """A click command whose Beam pipeline options end up in `ctx.obj["beam_args"]`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Set Beam's options aside, then parse the rest strictly."""
        own = {name for param in self.params for name in getattr(param, "opts", [])}
        own |= {name for param in self.params for name in getattr(param, "secondary_opts", [])}
        mine, beam = split_beam_args(list(args), own)
        ctx.meta["beam_args"] = beam
        return super().parse_args(ctx, mine)


def beam_args(ctx: click.Context) -> list[str]:
    """The Beam pipeline options a `BeamCommand` set aside."""
    return list(ctx.meta.get("beam_args", []))
