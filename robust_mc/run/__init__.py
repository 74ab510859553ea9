"""Runs and their files: checkpoints, atomic writes, resuming, interrupts, provenance and the
runtime (device, threads, precision).
"""
