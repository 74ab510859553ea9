"""YAML presets shipped with robust-mc; `--config NAME` finds them by name."""
