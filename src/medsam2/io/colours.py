"""The colour of each label, shared by montages, ITK-SNAP label descriptions and 3D Slicer segments."""

from __future__ import annotations

import numpy as np

#: distinct colours for labels (cycled)
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190],
    ],
    dtype=np.float32,
)


def label_colour(label: int) -> tuple[int, int, int]:
    r, g, b = PALETTE[(label - 1) % len(PALETTE)]
    return int(r), int(g), int(b)
