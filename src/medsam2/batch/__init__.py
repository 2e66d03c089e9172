"""``medsam2 batch``: many studies at once, in local worker processes or on Ray.

manifest (the studies: CSV or JSONL rows -> :class:`~medsam2.batch.manifest.BatchCase`), pool
(worker pools that hold a model each: :class:`~medsam2.batch.pool.LocalPool`,
:class:`~medsam2.batch.pool.RayPool`), run (one case -> one outcome, the report written after every
case, resume).
"""
