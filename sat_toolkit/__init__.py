"""sat-toolkit: smooth adversarial training as a product.

``sat_toolkit.run(recipe)`` trains and evaluates like ``sat-toolkit run``;
``sat_toolkit.load_model(run_dir)`` gives back the trained model, inputs in [0, 1];
``sat_toolkit.evaluate(model, x, y, eps=...)`` measures the robustness of any model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from sat_toolkit.api import load_model, run  # noqa: E402
from sat_toolkit.evaluation.evaluate import Evaluation, evaluate  # noqa: E402

__all__ = ["Evaluation", "__version__", "evaluate", "load_model", "run"]
