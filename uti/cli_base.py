"""Shared CLI plumbing: a click group that turns toolkit errors into one line and exit code 2, and keeps
third-party chatter (transformers' weight-loading bars and log lines) off stderr unless `--verbose`."""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

import click

from .errors import UTIError, UTIWarning

__all__ = ["DEVICE_OPTION", "DTYPE_OPTION", "DTYPES", "ErrorHandlingGroup", "emit_json", "parse_device", "parse_dtype",
           "quiet_libraries"]


def quiet_libraries(verbose: bool = False) -> None:
    """Silence transformers' progress bars ("Loading weights", downloads) and its info/warning log lines.

    Set through the environment when transformers is not imported yet (importing it costs a second even for
    `uti space show`), and through its logging API when it is; the environment also reaches child processes
    (`accelerate launch`). A variable the user set is kept, unless `verbose`, which turns everything back on.
    """
    _show_warning.verbose = verbose  # type: ignore[attr-defined]
    if verbose:
        for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
            if os.environ.get(key) in ("1", "error"):
                os.environ.pop(key)
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        if verbose:
            hf_logging.enable_progress_bar()
            hf_logging.set_verbosity_warning()
        else:
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()


def _verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:  # meta is shared by the whole context tree; a subcommand's flag is parsed after the group's
        ctx.meta["uti.verbose"] = True
        quiet_libraries(verbose=True)


def _verbose_option() -> click.Option:
    return click.Option(["--verbose"], is_flag=True, expose_value=False, callback=_verbose,
                        help="Show transformers' weight-loading progress bars and log messages.")


def _add_verbose(cmd: click.Command) -> None:
    """Give `cmd` (and the commands of a group, as far as they exist yet) a `--verbose` flag."""
    if not any(p.name == "verbose" for p in cmd.params):
        cmd.params.append(_verbose_option())
    for sub in getattr(cmd, "commands", {}).values():
        _add_verbose(sub)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Toolkit warnings as one `warning: <line>` on stderr; other libraries' warnings (deprecations inside
    transformers or peft, which a user cannot act on) only with `--verbose`, as Python shows them."""
    if issubclass(category, UTIWarning):
        click.echo(f"warning: {' '.join(str(message).split())}", err=True)
    elif _show_warning.verbose:  # type: ignore[attr-defined]
        _show_warning.fallback(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]


_show_warning.fallback = warnings.showwarning  # type: ignore[attr-defined]
_show_warning.verbose = False  # type: ignore[attr-defined]


class ErrorHandlingGroup(click.Group):
    """`UTIError`s (bad input, wrong hash, missing asset) print `error: <one line>` and exit 2, no traceback.

    Adds `--verbose` to the group: without it, transformers' weight-loading bars and log lines are silenced.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_verbose_option())

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_verbose(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        quiet_libraries(ctx.meta.get("uti.verbose", False))
        if warnings.showwarning is not _show_warning:
            _show_warning.fallback = warnings.showwarning  # type: ignore[attr-defined]
            warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except UTIError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except click.UsageError as err:  # a bad option or argument: one line too, naming the --help to read
            where = err.ctx.command_path if err.ctx is not None else ctx.command_path
            click.echo(f"error: {' '.join(err.format_message().split())} (see `{where} --help`)", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def emit_json(obj: Any) -> None:
    """Print `obj` as one line of JSON on stdout (for `--json`)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


DTYPES = ("float32", "bfloat16", "float16")

DEVICE_OPTION = click.option("--device", default="cpu", show_default=True,
                             help="Where the models run: cpu, cuda, cuda:1, mps, ...")
DTYPE_OPTION = click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES),
                            help="Weights' dtype; float32 gives the reference IDs, lower precision may differ.")


def parse_device(device: str) -> Any:
    """`torch.device(device)` that exists on this machine, or an InputError naming what is available."""
    import torch

    from .errors import InputError

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r} is not a device; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    elif dev.type == "mps":
        ok = torch.backends.mps.is_available()
    else:
        ok = dev.type == "cpu"
    if not ok:
        raise InputError(f"--device {device!r} is not available on this machine; use --device cpu")
    return dev


def parse_dtype(dtype: str) -> Any:
    """The torch dtype named by `--dtype`."""
    import torch

    return getattr(torch, dtype)
