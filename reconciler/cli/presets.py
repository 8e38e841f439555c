"""`circle presets`: the consensus templates and admission rules this release ships."""

from __future__ import annotations

import click

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.desired.documents import MAX_DOCUMENT_BYTES
from reconciler.desired.shipped import load_presets, shipped_dir
from reconciler.errors import InputError
from reconciler.files import read_bounded


@click.group("presets")
def group() -> None:
    """Shipped policy presets: consensus templates for `circle init --preset` and admission
    rules a circle names in `circle.yaml` (admission.presets)."""


@group.command("list")
@output_option
def list_presets(output: str | None) -> int:
    """List the shipped presets."""
    presets = load_presets()
    rows = [
        ("consensus", name, loaded.document.description or "")
        for name, loaded in sorted(presets.consensus.items())
    ] + [
        ("admission", name, loaded.document.description or "")
        for name, loaded in sorted(presets.admission.items())
    ]
    if settings(output).json:
        print_json([{"type": t, "name": n, "description": d.strip()} for t, n, d in rows])
        return 0
    for kind, name, description in rows:
        summary = description.strip().splitlines()[0] if description.strip() else ""
        stdout.print(f"{kind:<10} {name:<40} {summary}", markup=False)
    return 0


@group.command("show")
@click.argument("name")
@output_option
def show(name: str, output: str | None) -> int:
    """Print preset NAME as shipped."""
    presets = load_presets()
    loaded = presets.consensus.get(name) or presets.admission.get(name)
    if loaded is None:
        known = ", ".join(sorted([*presets.consensus, *presets.admission]))
        raise InputError(f"no preset named {name!r} (shipped: {known})")
    if settings(output).json:
        print_json(loaded.document.model_dump(mode="json", by_alias=True, exclude_none=True))
        return 0
    folder = "consensus" if name in presets.consensus else "admission"
    path = shipped_dir("policies") / folder / f"{name}.yaml"
    stdout.out(read_bounded(path, MAX_DOCUMENT_BYTES).decode("utf-8"), end="", highlight=False)
    return 0
