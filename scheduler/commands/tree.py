"""``greenllm tree run TREE``: a parent controller over child controllers (a controller tree)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from greenllm.errors import GreenllmError

log = logging.getLogger(__name__)


@click.group("tree")
def tree() -> None:
    """A controller tree: a parent moving budget between child controllers."""


@tree.command("run")
@click.argument("tree_file", metavar="TREE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--once", is_flag=True, help="Reallocate once and exit (for scripts).")
def run(tree_file: Path, once: bool) -> None:
    """Run the parent of TREE until interrupted: every period_s it reads each child
    controller's status (the limits its GPUs may hold, its demand curve), splits limit_w -
    reserve_w among the children by value per watt (each at most its own limit_w), and sets
    the changed children's budgets, lowerings first; a raise is sent only when the children,
    each counted at the larger of its grant and what it holds, stay within the parent's
    watts. TREE is read again every period (edit limit_w to cut or raise). The format is in
    scheduler/tree/live.py and docs/power-domains.md. Each child's cluster.yaml needs
    controller.demand_points > 0.
    """
    from scheduler.tree.live import ParentLoop, connect_children, load_tree

    spec = load_tree(tree_file)
    children = connect_children(spec)

    def said(child: str, old_w: float, new_w: float) -> None:
        click.echo(f"{child}: grant {old_w:.0f} W -> {new_w:.0f} W")

    loop = ParentLoop(
        children, [c.limit_w for c in spec.children], spec.limit_w - spec.reserve_w, said
    )
    click.echo(
        f"parent of {', '.join(c.name for c in spec.children)}: "
        f"{spec.limit_w - spec.reserve_w:g} W usable, every {spec.period_s:g} s"
    )
    try:
        while True:
            loop.step()
            if once:
                return
            time.sleep(spec.period_s)
            try:
                fresh = load_tree(tree_file)
            except GreenllmError as exc:
                click.echo(f"warning: {exc}; keeping the last good tree", err=True)
                continue
            usable_w = fresh.limit_w - fresh.reserve_w
            if abs(usable_w - loop.parent.usable_w) > 1e-9:
                click.echo(f"parent: {loop.parent.usable_w:g} W -> {usable_w:g} W usable")
                loop.parent.usable_w = usable_w
            spec = fresh
    except KeyboardInterrupt:
        click.echo("parent stopped; every child keeps its last grant (it is safe on its own)")
    finally:
        for child in children:
            child.client.close()


def register(cli: click.Group) -> None:
    """Add ``tree`` to the CLI."""
    cli.add_command(tree)
