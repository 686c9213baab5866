"""Shared CLI plumbing: a click group that turns toolkit errors into one line and exit code 2."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import UTIError

__all__ = ["ErrorHandlingGroup", "emit_json"]


class ErrorHandlingGroup(click.Group):
    """`UTIError`s (bad input, wrong hash, missing asset) print `error: <one line>` and exit 2, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UTIError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def emit_json(obj: Any) -> None:
    """Print `obj` as one line of JSON on stdout (for `--json`)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
