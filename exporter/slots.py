"""Named slices of a flat count vector.

Windows add one flat vector per batch (one ``np.add`` instead of one per statistic), so several
statistics share a vector. ``Slots`` hands out consecutive slices by name, so code reads
``vector[slots.slo]`` instead of offsets worked out by hand.
"""

from __future__ import annotations


class Slots:
    """Consecutive named slices; ``width`` is the total length of the vector."""

    def __init__(self, **widths: int) -> None:
        self._slices: dict[str, slice] = {}
        self.width = 0
        for name, width in widths.items():
            self.add(name, width)

    def add(self, name: str, width: int) -> slice:
        if name in self._slices:
            raise ValueError(f"slot {name!r} declared twice")
        s = slice(self.width, self.width + width)
        self._slices[name] = s
        self.width += width
        return s

    def __getattr__(self, name: str) -> slice:
        try:
            return self.__dict__["_slices"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> slice:
        return self._slices[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._slices)
