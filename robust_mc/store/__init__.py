"""What runs leave behind and read back: checkpoints (and their safetensors and exported forms),
run records, verified points, and the resumable state of an interrupted run."""
