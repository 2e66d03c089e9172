"""Reading and writing volumes and masks: the Volume type, readers with their checks, writers, the
label-format registry, DICOM, and the turning of a volume into windowed frames."""
