"""What a person looks at after a run: PNG montages of overlays, and the peak memory of a piece of work."""
