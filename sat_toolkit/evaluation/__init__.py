"""Robustness evaluation: clean and robust accuracy, per attack and per-sample worst case."""

from sat_toolkit.evaluation.robust import AttackOutcome, RobustnessReport, evaluate_robustness

__all__ = ["AttackOutcome", "RobustnessReport", "evaluate_robustness"]
