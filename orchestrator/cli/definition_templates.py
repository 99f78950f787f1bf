"""`orchestrator definitions new|templates`: start a definition from a built-in template.

The templates themselves (`orchestrator.definition_templates`) are complete,
valid definitions; `new` writes one under the workflow's name, `templates`
lists them. Both work offline. They are commands of the `definitions` group
(registered in `definitions.py`), kept apart from the validate/apply/list of
existing definitions.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import CliError, echo_json

__all__ = ["list_templates", "new"]


@click.command("templates")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_templates(as_json: bool) -> None:
    """The built-in definition templates of `definitions new --from-template`."""
    from ..definition_templates import available

    found = available()
    if as_json:
        echo_json({"templates": [{"name": t.name, "description": t.description} for t in found.values()]})
        return
    width = max(map(len, found), default=0)
    for t in found.values():
        click.echo(f"{t.name.ljust(width)}  {t.description}")


@click.command("new")
@click.argument("name")
@click.option("--from-template", "template", required=True, metavar="TEMPLATE",
              help="A built-in template (see `orchestrator definitions templates`).")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Where to write it (default NAME.yaml; '-' for standard output).")
@click.option("--force", is_flag=True, help="Overwrite FILE when it exists.")
def new(name: str, template: str, output: str | None, force: bool) -> None:
    """Write a starter definition named NAME from a built-in template."""
    from ..definition_templates import InvalidName, UnknownTemplate, render

    try:
        text = render(template, name)
    except (UnknownTemplate, InvalidName) as exc:
        raise CliError(str(exc.args[0])) from None
    if output == "-":
        click.echo(text, nl=False)
        return
    path = Path(output if output is not None else f"{name}.yaml")
    if path.exists() and not force:
        raise CliError(f"{path} exists: not overwritten (pass --force to replace it)")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path} (workflow {name}, from template {template}); "
               f"check it with: orchestrator definitions validate {path}")
