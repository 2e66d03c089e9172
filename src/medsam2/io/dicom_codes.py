"""SNOMED CT codes for the structures medsam2 knows by name, for DICOM SEG segments and RT-STRUCT ROIs.

A name is matched on its words, case and punctuation aside, with a laterality word (right/left,
r/l) taken out as a modifier: ``kidney_right``, ``Right kidney`` and ``kidney R`` are all the
kidney with the modifier Right. A name the table does not know gets the generic Tissue code and
keeps its name as the segment's label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

_ANATOMY = codes.SCT.AnatomicalStructure
_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure

#: words of a name (sorted, laterality removed) -> (category, type)
_KNOWN: dict[str, tuple[Code, Code]] = {
    "liver": (_ANATOMY, codes.SCT.Liver),
    "spleen": (_ANATOMY, codes.SCT.Spleen),
    "kidney": (_ANATOMY, codes.SCT.Kidney),
    "stomach": (_ANATOMY, codes.SCT.Stomach),
    "pancreas": (_ANATOMY, codes.SCT.Pancreas),
    "gallbladder": (_ANATOMY, codes.SCT.Gallbladder),
    "bladder gall": (_ANATOMY, codes.SCT.Gallbladder),
    "heart": (_ANATOMY, codes.SCT.Heart),
    "aorta": (_ANATOMY, codes.SCT.Aorta),
    "lung": (_ANATOMY, codes.SCT.Lung),
    "brain": (_ANATOMY, codes.SCT.Brain),
    "hippocampus": (_ANATOMY, codes.SCT.Hippocampus),
    "adrenal": (_ANATOMY, codes.SCT.AdrenalGland),
    "adrenal gland": (_ANATOMY, codes.SCT.AdrenalGland),
    "esophagus": (_ANATOMY, codes.SCT.Esophagus),
    "oesophagus": (_ANATOMY, codes.SCT.Esophagus),
    "duodenum": (_ANATOMY, codes.SCT.Duodenum),
    "prostate": (_ANATOMY, codes.SCT.Prostate),
    "colon": (_ANATOMY, codes.SCT.Colon),
    "caudate": (_ANATOMY, codes.SCT.CaudateNucleus),
    "caudate nucleus": (_ANATOMY, codes.SCT.CaudateNucleus),
    "putamen": (_ANATOMY, codes.SCT.Putamen),
    "thalamus": (_ANATOMY, codes.SCT.Thalamus),
    "lateral ventricle": (_ANATOMY, codes.SCT.LateralVentricle),
    "head": (_ANATOMY, codes.SCT.Head),
    "lesion": (_ABNORMAL, codes.SCT.Lesion),
    "tumor": (_ABNORMAL, codes.SCT.Tumor),
    "tumour": (_ABNORMAL, codes.SCT.Tumor),
    "mass": (_ABNORMAL, codes.SCT.Mass),
}
_LATERALITY = {"right": codes.SCT.Right, "r": codes.SCT.Right, "rt": codes.SCT.Right,
               "left": codes.SCT.Left, "l": codes.SCT.Left, "lt": codes.SCT.Left}


@dataclass(frozen=True)
class AnatomyCode:
    """What a segment or ROI is: its category and type codes, and a laterality modifier or None.

    ``known`` is False for the generic Tissue code given to a name the table does not know."""

    category: Code
    type: Code
    laterality: Code | None
    known: bool


def anatomy_code(name: str | None) -> AnatomyCode:
    """The codes of a structure's name (see the module's docstring for the matching)."""
    words = [w for w in re.split(r"[^a-z0-9]+", (name or "").lower()) if w]
    laterality = None
    sided = [w for w in words if w in _LATERALITY]
    if len(sided) == 1 and len(words) > 1:
        laterality = _LATERALITY[sided[0]]
        words = [w for w in words if w not in _LATERALITY]
    key = " ".join(sorted(words))
    singular = " ".join(sorted(w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words))
    found = _KNOWN.get(key) or _KNOWN.get(singular)
    if found is None:
        return AnatomyCode(codes.SCT.Tissue, codes.SCT.Tissue, None, False)
    return AnatomyCode(found[0], found[1], laterality, True)
