"""The tuning of LiteMedSAM's propagation (:class:`PropagationSettings`), apart from the step that
uses it so that options and the command line can name it without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass

from medsam2.engine.memory import BankSettings


@dataclass(frozen=True)
class PropagationSettings:
    """Tuning of the propagation engine (defaults measured on CT organs; see DESIGN.md).

    Attributes:
        box_margin: model pixels added around each box taken from the memory's prior.
        component_fraction: prior components smaller than this fraction of the largest get no box.
        stop_presence: a frame looks absent when its mask's feature prototype has a cosine
            similarity below this to the memory's reference prototypes...
        stop_iou: ...or when the predicted IoU is below this...
        stop_area_fraction: ...or when the mask is smaller than this fraction of the largest mask
            remembered for the object...
        stop_intensity_overlap: ...or, when above 0, when the histogram of the frame's values
            inside the mask overlaps that of every prompted frame's mask by less than this
            (histogram intersection, 0..1): a mask that has moved onto tissue of another intensity.
            0 turns the rule off; it applies where the backbone keeps an intensity map
            (LiteMedSAM). 0.35 measured on 58 structures, 30 of them untuned (DESIGN.md, issue 20).
        patience: consecutive absent-looking frames after which the object ends in that direction.
        bank: the confidence memory bank's rule (and the frame keys' grid).
    """

    box_margin: float = 4.0
    component_fraction: float = 0.1
    stop_presence: float = 0.5
    stop_iou: float = 0.6
    stop_area_fraction: float = 0.02
    stop_intensity_overlap: float = 0.35
    patience: int = 2
    bank: BankSettings = BankSettings()
