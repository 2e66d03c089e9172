"""Projects: the unit of annotation work. A folder holds the cases (images by reference with a
content hash, or copies), every saved label map of each case as an immutable version with its
status and provenance, and an SQLite index of both (:mod:`.store`). Cases come from files, globs,
DICOM folders or a dataset folder (:mod:`.sources`); the final labels leave as a dataset that
``train`` / ``evaluate`` or nnU-Net read (:mod:`.exporting`).

Layout of a project folder::

    DIR/project.sqlite          the index (WAL)
    DIR/images/CASE.ext         copies, with ``init --copy``
    DIR/labels/CASE/vN.nii.gz   version N of a case's label map, in the image's geometry
"""
