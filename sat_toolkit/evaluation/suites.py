"""Named attack suites: what ``sat-toolkit eval --suite NAME`` runs, named for what it contains.

``autoattack`` is AutoAttack's standard version (Croce & Hein, ICML 2020), the one
RobustBench requires and papers quote: APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and
Square (5000 queries), in that order, with AutoAttack's defaults, each attacking only the
images every earlier one failed on. ``aa-core`` is its two APGD members alone: nearly
always the same number at a fraction of the cost, but it cannot catch the models FAB-T
and Square exist for (masked gradients). PGD figures are kept separately (``pgd``)
because papers, including SAT, quote them; they overstate robustness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sat_toolkit.errors import SatError


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named list of attacks, run in order; ``equivalent_to`` names the published protocol it is."""

    description: str
    attacks: dict[str, dict[str, Any]]
    equivalent_to: str | None = None


SUITES: dict[str, Suite] = {
    "autoattack": Suite(
        "AutoAttack's standard version: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), "
        "Square (5000 queries)",
        {
            "apgd_ce": {"name": "apgd_ce", "steps": 100},
            "apgd_t": {"name": "apgd_t", "steps": 100, "n_target_classes": 9},
            "fab_t": {"name": "fab_t", "steps": 100, "n_target_classes": 9},
            "square": {"name": "square", "queries": 5000},
        },
        equivalent_to="AutoAttack(version='standard') (Croce & Hein 2020)",
    ),
    "aa-core": Suite(
        "AutoAttack's gradient members only: APGD-CE, APGD-T (9 targets); about a fifth of its cost",
        {
            "apgd_ce": {"name": "apgd_ce", "steps": 100},
            "apgd_t": {"name": "apgd_t", "steps": 100, "n_target_classes": 9},
        },
    ),
    "pgd": Suite(
        "PGD-20, as papers (SAT included) quote it; overstates robustness",
        {"pgd20": {"name": "pgd", "steps": 20}},
    ),
    "quick": Suite(
        "APGD-CE with 20 steps: a smoke test, not a robustness number",
        {"apgd_ce": {"name": "apgd_ce", "steps": 20}},
    ),
}

#: The suite ``sat-toolkit eval`` and ``sat_toolkit.evaluate`` run unless told otherwise.
DEFAULT_SUITE = "autoattack"

#: Names that once meant something else: one line saying what to ask for now.
RETIRED_SUITES: dict[str, str] = {
    "standard": "suite 'standard' was only AutoAttack's core (APGD-CE + APGD-T) and is now called 'aa-core'; "
    "AutoAttack's standard version with FAB-T and Square is 'autoattack'",
    "plus": "suite 'plus' is retired (it was APGD-CE x2, APGD-T, APGD-DLR and Square, not AutoAttack's "
    "'plus'); use 'autoattack', and add attacks with --attack, e.g. --attack apgd_dlr",
}


def suite_names() -> str:
    return ", ".join(SUITES)


def parse_attack_option(text: str) -> tuple[str, dict[str, Any]]:
    """``"pgd:steps=50,restarts=2"`` -> ``("pgd_steps50_restarts2", {"name": "pgd", ...})``."""
    return parse_plugin_option(text, "--attack", "pgd:steps=50")


def parse_plugin_option(text: str, option: str, example: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:key=value,...]`` as ``--attack``, ``--arch`` and ``--data`` take it: a label
    naming the values, and the plugin table (``{"name": NAME, key: value, ...}``). NAME may
    be qualified, ``package:name`` (a plugin whose name another package shares)."""
    from sat_toolkit.recipe import parse_value

    name, _, rest = text.partition(":")
    qualifier, _, after = rest.partition(":")
    if qualifier.strip() and "=" not in qualifier and _is_plugin_package(name):  # "package:name[:k=v,...]"
        name, rest = f"{name.strip()}:{qualifier.strip()}", after
    name = name.strip()
    if not name:
        raise SatError(f"{option} {text!r}: give a name, e.g. {option} {example}")
    spec: dict[str, Any] = {"name": name}
    label = name
    parts = [part.strip() for part in rest.split(",")] if rest.strip() else []
    if any(not part for part in parts[:-1]):  # "steps=2,,seed=1": a pair lost in typing
        raise SatError(f"{option} {text!r}: an empty parameter between commas; give key=value pairs")
    for item in filter(None, parts):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SatError(f"{option} {text!r}: parameters are key=value pairs separated by commas")
        spec[key.strip()] = parse_value(value.strip())
        label += f"_{key.strip()}{value.strip()}".replace("/", "-")
    return label, spec


def _is_plugin_package(text: str) -> bool:
    """Whether ``text`` names an installed package that registers plugins (the qualifier
    of ``package:name``), not an attack, architecture or dataset followed by a typo."""
    from sat_toolkit.plugins import get_plugin_host
    from sat_toolkit.plugins.manager import normalise_distribution

    wanted = normalise_distribution(text.strip())
    return any(normalise_distribution(r.distribution) == wanted for r in get_plugin_host().records())


def describe_suite(name: str | None) -> dict[str, Any] | None:
    """What a report says of its suite: name, members in order, what it is, where it is defined."""
    if name is None or name not in SUITES:
        return None
    from sat_toolkit import __version__
    from sat_toolkit.plugins.manager import BUILTIN_DISTRIBUTION

    suite = SUITES[name]
    return {
        "name": name,
        "members": list(suite.attacks),
        "description": suite.description,
        "equivalent_to": suite.equivalent_to,
        "defined_in": f"{BUILTIN_DISTRIBUTION} {__version__}",
    }


def get_suite(name: str) -> Suite:
    """The suite called ``name``; a retired or unknown name is a one-line error saying what to use."""
    if name in RETIRED_SUITES:
        raise SatError(RETIRED_SUITES[name])
    if name not in SUITES:
        raise SatError(f"unknown suite '{name}'; choose one of {suite_names()} (or none)")
    return SUITES[name]


def resolve_suite(suite: str | None, attacks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The attacks to run: a named suite, ``--attack`` options, or both (suite first)."""
    chosen: dict[str, dict[str, Any]] = {}
    if suite:
        chosen.update({label: dict(spec) for label, spec in get_suite(suite).attacks.items()})
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
