"""``medsam2 evaluate``: datasets (nnU-Net / plain layouts), simulated prompts and the interactive
protocol (interactive), the harness and its reports (harness), metrics through MONAI (metrics)."""
