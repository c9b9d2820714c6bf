"""Paired comparison of two evaluation reports of the same images.

Two models evaluated on the same images differ image by image, and the paired view is
far sharper than two accuracies with their own error bars: only the discordant images
(robust under one model, broken under the other) carry information about the
difference. The difference is (only B - only A) / n; its 95% interval is the paired
Wald interval, and the exact two-sided McNemar test (a binomial test on the discordant
images) says whether it is beyond chance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.parsing import loads_json

Z_95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """One metric (clean or robust) of reports A and B on the same n images."""

    name: str
    n: int
    a: int  # images counted correct / robust under A
    b: int
    only_a: int
    only_b: int

    @property
    def difference(self) -> float:
        """B - A, as a fraction of the images."""
        return (self.only_b - self.only_a) / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """95% paired Wald interval of B - A."""
        discordant = self.only_a + self.only_b
        variance = max(discordant - (self.only_b - self.only_a) ** 2 / self.n, 0.0) / self.n**2
        half = Z_95 * math.sqrt(variance)
        return self.difference - half, self.difference + half

    @property
    def p_value(self) -> float:
        """Exact two-sided McNemar test: P(a split this uneven | no difference)."""
        return mcnemar_p(self.only_a, self.only_b)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact binomial test of ``only_a`` against ``only_a + only_b`` fair coin flips."""
    total = only_a + only_b
    if total == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k), X ~ Binomial(total, 1/2), summed in log space (total can be thousands).
    log_terms = [
        math.lgamma(total + 1) - math.lgamma(i + 1) - math.lgamma(total - i + 1) for i in range(k + 1)
    ]
    peak = max(log_terms)
    tail = math.exp(peak + math.log(sum(math.exp(t - peak) for t in log_terms)) - total * math.log(2))
    return min(1.0, 2.0 * tail)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Reports A and B, paired image by image."""

    a: dict[str, Any]
    b: dict[str, Any]
    clean: PairedDifference
    robust: PairedDifference
    notes: list[str]


def read_report(path: Path) -> dict[str, Any]:
    """An evaluation report (JSON) with its per-image outcome; a one-line error otherwise."""
    try:
        report = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SatError(f"--compare {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SatError(f"--compare {path}: not a JSON evaluation report ({error})") from None
    per_image = report.get("per_image") if isinstance(report, dict) else None
    outcome = per_image.get("outcome") if isinstance(per_image, dict) else None
    if not isinstance(outcome, list) or not all(isinstance(o, str) for o in outcome):
        raise SatError(
            f"--compare {path}: the report has no per-image outcome (per_image.outcome); "
            "evaluate again with this version of sat-toolkit eval"
        )
    return report


def compare_reports(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Pair two reports of the same images (refused when they are not: the pairing would be noise)."""
    outcome_a, outcome_b = a["per_image"]["outcome"], b["per_image"]["outcome"]
    if len(outcome_a) != len(outcome_b):
        raise SatError(
            f"{names[0]} has {len(outcome_a)} images and {names[1]} {len(outcome_b)}: a paired comparison "
            "needs the same images (the same --data, --samples and --seed)"
        )
    hash_a, hash_b = a["per_image"].get("images_sha256"), b["per_image"].get("images_sha256")
    if hash_a and hash_b and hash_a != hash_b:
        raise SatError(
            f"{names[0]} and {names[1]} evaluate different images (images_sha256 differs): a paired "
            "comparison needs the same images (the same --data, --samples and --seed)"
        )
    notes = []
    unhashed = [name for name, digest in zip(names, (hash_a, hash_b), strict=True) if not digest]
    if unhashed:
        notes.append(
            f"{' and '.join(unhashed)} record(s) no per_image.images_sha256, so that both evaluated the "
            "same images cannot be checked: the pairing assumes it"
        )
    for key in ("threat_model", "eps"):
        if a.get(key) != b.get(key):
            notes.append(f"{key} differs: {a.get(key)} in {names[0]}, {b.get(key)} in {names[1]}")
    suite_a, suite_b = (a.get("suite") or {}).get("name"), (b.get("suite") or {}).get("name")
    if suite_a != suite_b:
        notes.append(f"suite differs: {suite_a} in {names[0]}, {suite_b} in {names[1]}")
    return Comparison(
        a,
        b,
        _paired("clean", outcome_a, outcome_b, "misclassified"),
        _paired("robust", outcome_a, outcome_b),
        notes,
    )


def _paired(
    name: str, outcome_a: list[str], outcome_b: list[str], failure: str | None = None
) -> PairedDifference:
    """Counts for "correct" (``failure`` = "misclassified") or "robust" (``failure`` None)."""

    def good(outcome: str) -> bool:
        return outcome != failure if failure is not None else outcome == "robust"

    pairs = [(good(x), good(y)) for x, y in zip(outcome_a, outcome_b, strict=True)]
    return PairedDifference(
        name,
        len(pairs),
        sum(x for x, _ in pairs),
        sum(y for _, y in pairs),
        sum(x and not y for x, y in pairs),
        sum(y and not x for x, y in pairs),
    )
