"""Named attack suites: what ``sat-toolkit eval --suite NAME`` runs.

``standard`` follows AutoAttack's core: APGD with cross-entropy and the targeted APGD-T
(DLR loss), each sample counted robust only if it survives both. PGD figures are kept
separately (``pgd``) because papers, including SAT, quote them; they overstate robustness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sat_toolkit.errors import SatError

SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "standard": {
        "apgd_ce": {"name": "apgd_ce", "steps": 100},
        "apgd_t": {"name": "apgd_t", "steps": 100},
    },
    "plus": {
        "apgd_ce": {"name": "apgd_ce", "steps": 100, "restarts": 2},
        "apgd_t": {"name": "apgd_t", "steps": 100},
        "apgd_dlr": {"name": "apgd_dlr", "steps": 100},
        "square": {"name": "square", "queries": 5000},
    },
    "pgd": {"pgd20": {"name": "pgd", "steps": 20}},
    "quick": {"apgd_ce": {"name": "apgd_ce", "steps": 20}},
}


def parse_attack_option(text: str) -> tuple[str, dict[str, Any]]:
    """``"pgd:steps=50,restarts=2"`` -> ``("pgd_steps50_restarts2", {"name": "pgd", ...})``."""
    from sat_toolkit.recipe import parse_value

    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise SatError(f"--attack {text!r}: give an attack name, e.g. --attack pgd:steps=50")
    spec: dict[str, Any] = {"name": name}
    label = name
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SatError(f"--attack {text!r}: parameters are key=value pairs separated by commas")
        spec[key.strip()] = parse_value(value.strip())
        label += f"_{key.strip()}{value.strip()}".replace("/", "-")
    return label, spec


def resolve_suite(suite: str | None, attacks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The attacks to run: a named suite, ``--attack`` options, or both (suite first)."""
    chosen: dict[str, dict[str, Any]] = {}
    if suite:
        if suite not in SUITES:
            raise SatError(f"unknown suite '{suite}'; choose one of {', '.join(SUITES)}")
        chosen.update({label: dict(spec) for label, spec in SUITES[suite].items()})
    for text in attacks:
        label, spec = parse_attack_option(text)
        chosen[label] = spec
    if not chosen:
        raise SatError("nothing to run: give --suite and/or --attack")
    return chosen


def build_attacks(
    specs: Mapping[str, Mapping[str, Any]],
    *,
    eps: float | None = None,
    norm: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Instantiate every attack; eps, norm and seed fill in what a spec leaves out.

    The seed gives each attack its own generator, so its numbers do not depend on what
    else consumed torch's global random state before it.
    """
    from sat_toolkit.attacks import create_attack

    given = {"eps": eps, "norm": norm, "seed": seed}
    defaults = {key: value for key, value in given.items() if value is not None}
    return {label: create_attack(dict(spec), defaults=defaults) for label, spec in specs.items()}
