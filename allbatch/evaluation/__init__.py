"""Evaluation: ``allbatch eval``, metrics of a results file against truth labels taken from folder names.

labels.py maps folder names (or a labels file's rows) to classes, metrics.py computes confusion matrix, per-class and
screening (ALL vs benign) metrics on NumPy arrays, evaluate.py decides which rows count, and
report.py renders the result (rich tables, JSON, confusion-matrix PNG).
"""

from allbatch.evaluation.evaluate import EvalConfig, EvaluationResult, FailedImage, evaluate_results, evaluate_table
from allbatch.evaluation.labels import (
    assign_labels,
    class_for_label,
    default_class_for,
    folder_of,
    match_labels,
    parse_class_map,
    read_labels_file,
)
from allbatch.evaluation.metrics import (
    ClassMetrics,
    MulticlassMetrics,
    ScreeningMetrics,
    confusion_matrix,
    metrics_from_confusion,
    multiclass_metrics,
    roc_auc,
    screening_metrics,
)

__all__ = [
    "ClassMetrics",
    "EvalConfig",
    "EvaluationResult",
    "FailedImage",
    "MulticlassMetrics",
    "ScreeningMetrics",
    "assign_labels",
    "class_for_label",
    "confusion_matrix",
    "default_class_for",
    "evaluate_results",
    "evaluate_table",
    "folder_of",
    "match_labels",
    "metrics_from_confusion",
    "multiclass_metrics",
    "parse_class_map",
    "read_labels_file",
    "roc_auc",
    "screening_metrics",
]
