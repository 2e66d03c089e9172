"""One-prompt segmentation: locating a structure in images with no prompt from annotated supports
(locate) and the run over supports and queries, 2D and 3D (run)."""
