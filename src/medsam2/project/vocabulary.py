"""The project's words, in one light module (no numpy, no SQLite) that the command line's parser,
the server's request bodies and the project's own modules read."""

#: what a saved label map is: work in progress, or done (what training and export read)
STATUSES = ("draft", "final")
#: the dataset layouts ``project export`` writes
EXPORT_FORMATS = ("evaluate", "nnunet")
#: how ``Next case`` chooses (see :mod:`medsam2.project.strategies`)
STRATEGIES = ("first", "random", "least-confident")

#: why ``project score`` cannot run: the finals' structures are what it looks for
NO_FINAL_TO_SCORE = "scoring needs at least one case with a final label (its structures are what the model looks for)"
