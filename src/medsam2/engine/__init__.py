"""The engine: the interactive session over one volume (session), the one sweep loop of every
backbone (sweep) with each backbone's step (litemedsam_step, sam2_step), what the steps share
(tracks), the budgeted feature cache (feature_cache) and what a segmentation gives back (results)."""
