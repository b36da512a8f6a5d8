"""Config ↔ baseline consistency, checked at ``check-config`` and at start.

Each mismatch here used to pass silently and switch a feature off (a ``positive_class`` the
baseline never saw disables fairness and binary quality); now it is an error naming its key path.
"""

from __future__ import annotations

from exporter.config import LOWER_IS_BETTER, ModelConfig
from exporter.profile import Baseline

CLASSIFICATION_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "log_loss", "brier"})
REGRESSION_METRICS = frozenset({"mae", "rmse", "mape"})


def baseline_problems(model: ModelConfig, baseline: Baseline, path: str) -> list[str]:
    """Every way ``model``'s config contradicts its baseline, one ``key.path: reason`` each."""
    problems: list[str] = []
    task = baseline.task
    if model.task_explicit and model.task != task:
        problems.append(f"{path}.task: is {model.task!r} but the baseline {model.baseline} was built for {task!r} "
                        "(rebuild it with --task, or change the key)")
    if model.positive_class is not None:
        if task == "regression":
            problems.append(f"{path}.positive_class: the baseline is a regression baseline; it has no classes")
        elif not baseline.classes:
            problems.append(f"{path}.positive_class: the baseline has no class list (build it with --prediction)")
        elif model.positive_class not in baseline.classes:
            problems.append(f"{path}.positive_class: {model.positive_class!r} is not a class of the baseline "
                            f"(classes: {', '.join(baseline.classes[:20])})")
    if model.fairness.attributes:
        binary = task != "regression" and (model.positive_class in baseline.classes
                                           or (model.positive_class is None and len(baseline.classes) == 2))
        if not binary:
            problems.append(f"{path}.fairness.attributes: fairness needs a binary classifier's positive class "
                            "(set positive_class to a class of the baseline)")
    allowed = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    for metric, threshold in sorted(model.quality_thresholds.items()):
        where = f"{path}.quality.thresholds.{metric}"
        if metric not in allowed:
            problems.append(f"{where}: not a {task} metric (use one of {', '.join(sorted(allowed))})")
        elif threshold.baseline_offset is not None and metric not in baseline.reference_quality:
            problems.append(f"{where}: is relative to the baseline, but the baseline has no reference {metric} "
                            "(build it with --prediction and --target)")
        elif threshold.absolute is not None and metric not in LOWER_IS_BETTER and not 0 <= threshold.absolute <= 1:
            problems.append(f"{where}: must be between 0 and 1")
    for i, slo in enumerate(model.slos):
        if slo.type == "correctness" and task != "regression" and not baseline.classes:
            problems.append(f"{path}.slos[{i}]: a correctness SLO needs the baseline's classes "
                            "(build it with --prediction)")
    return problems
