"""Fine-tuning (``medsam2 train``): a backbone's prompt encoder and mask decoder on cached embeddings.

Modules: :mod:`.settings` (the run's options), :mod:`.samples` and :mod:`.prompts` (training slices and
their simulated prompts), :mod:`.loop` (the :class:`~medsam2.train.loop.Trainer`), the recipes per
backbone family, :mod:`.losses`.
"""
