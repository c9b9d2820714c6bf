"""Which dataset key an error asks for, so each command can say where that key goes.

A dataset plugin words its errors once, for a recipe ("... has no column 'img'; set
image_column"); the recipe takes the key as ``data.image_column`` (``--set
data.image_column=...``), ``eval`` as ``--data NAME:image_column=...``. Each command
spells the hint its own way from what this finds.
"""

from __future__ import annotations

import re

from sat_toolkit.errors import SatError


def asked_dataset_key(message: str) -> tuple[str, str] | None:
    """``(dataset, key)`` for an error of dataset ``dataset`` that asks to set one of its own
    parameters ("set image_column", "needs the parameter 'path'"), else None."""
    from sat_toolkit.params import declared
    from sat_toolkit.plugins import get_plugin_host

    match = re.match(r"dataset '([\w.-]+)'", message)
    if match is None:
        return None
    name = match.group(1)
    try:
        schema = declared(get_plugin_host().get("dataset", name))
    except SatError:
        return None
    keys = schema.params if schema is not None else {}
    asked = re.findall(r"\bset ([a-z_]+)\b|needs the parameter '([a-z_]+)'", message)
    key = next((k for pair in asked for k in pair if k in keys), None)
    return None if key is None else (name, key)
