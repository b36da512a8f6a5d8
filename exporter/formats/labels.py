"""mlmon's own ``POST /v1/labels`` body → :class:`LabelBatch`.

Like the prediction parsers: a body that cannot be used as a whole raises
:class:`~exporter.batch.PayloadError`; an item without ``id`` and ``label`` is refused alone as a
:class:`~exporter.batch.Rejection` and the other items are kept. Label *values* are judged by the
monitor, which knows the model's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.batch import PayloadError, Rejection
from exporter.formats._common import require_list, require_object

INVALID_LABEL = "invalid_label"


@dataclass(frozen=True)
class LabelBatch:
    model: str
    ids: list[Any]
    labels: list[Any]
    positions: list[int]
    """Index in the request of each kept item, so later rejections name the item the client sent."""
    rejected: list[Rejection]

    @property
    def size(self) -> int:
        return len(self.ids) + len(self.rejected)


def parse_labels(body: Any) -> LabelBatch:
    """``{"model", "labels": [{"id", "label"}, ...]}`` or the single form ``{"model", "id", "label"}``."""
    data = require_object(body, "$")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise PayloadError("model", "is required")
    if "labels" in data:
        items = require_list(data["labels"], "labels")
    elif "id" in data:
        items = [{"id": data.get("id"), "label": data.get("label")}]
    else:
        raise PayloadError("labels", "is required (or a single 'id' and 'label')")
    ids, labels, positions, rejected = [], [], [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "label" not in item:
            rejected.append(Rejection(i, f"labels[{i}]", "must be an object with id and label", INVALID_LABEL))
            continue
        ids.append(item["id"])
        labels.append(item["label"])
        positions.append(i)
    return LabelBatch(model, ids, labels, positions, rejected)
