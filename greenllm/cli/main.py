"""The ``greenllm`` command.

Commands live in modules that define ``register(group)``: the ``*_cmd`` modules of this
package, and those of the packages named under the ``greenllm.commands`` entry-point group
(scheduler/ and workers/ plug in that way, so the library never imports them).

Every failure a user can cause ends as one line on stderr and a non-zero exit:
``greenllm: error: <what and where>``. ``greenllm`` alone prints its help (exit 0); a bare
command group (``greenllm budget``) prints the group's help on stderr (exit 2). Anything
else is a bug, and still one line (``greenllm: internal error: ...``); ``GREENLLM_DEBUG=1``
shows its traceback.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from importlib.metadata import entry_points
from types import ModuleType

import click

from greenllm.errors import GreenllmError

EXIT_USAGE = 2
EXIT_ERROR = 1
COMMAND_ENTRY_POINT_GROUP = "greenllm.commands"
#: Set to show the traceback of an internal error instead of one line.
DEBUG_ENV = "GREENLLM_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="greenllm")
def cli() -> None:
    """greenllm: LLM training and inference under a global power budget.

    Operators set budgets and policies and watch status; ML engineers submit jobs and
    see their energy and carbon; researchers simulate policies and budgets. Every query
    command takes --json and then prints one JSON document on stdout.
    """


def _register_package(package: ModuleType, suffix: str = "") -> None:
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.endswith(suffix):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(cli)


def _load_commands() -> None:
    _register_package(sys.modules[__package__ or "greenllm.cli"], suffix="_cmd")
    for ep in sorted(entry_points(group=COMMAND_ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            package = importlib.import_module(ep.value)
        except ModuleNotFoundError as exc:
            if exc.name != ep.value:
                raise
            continue
        if hasattr(package, "__path__"):
            _register_package(package)


def _show_help(ctx: click.Context) -> int:
    """Print a command's help as click does: bare ``greenllm`` on stdout with exit 0, a
    bare command group (``greenllm budget``) on stderr with the usage exit status."""
    if ctx.parent is None:
        click.echo(ctx.get_help(), color=ctx.color)
        return 0
    click.echo(ctx.get_help(), err=True, color=ctx.color)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit status."""
    _load_commands()
    try:
        result = cli.main(args=argv, prog_name="greenllm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        return _show_help(exc.ctx)
    except click.Abort:
        click.echo("greenllm: aborted", err=True)
        return 130
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx else ""
        where = f"{path}: " if path and path != "greenllm" else ""
        msg = " ".join(exc.format_message().split())
        click.echo(f"greenllm: error: {where}{msg} (see --help)", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"greenllm: error: {' '.join(exc.format_message().split())}", err=True)
        return exc.exit_code
    except GreenllmError as exc:
        click.echo(f"greenllm: error: {' '.join(str(exc).split())}", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("greenllm: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        what = " ".join(f"{type(exc).__name__}: {exc}".split())
        click.echo(
            f"greenllm: internal error: {what} (a bug; {DEBUG_ENV}=1 shows the traceback)",
            err=True,
        )
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
