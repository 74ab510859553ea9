"""Measuring models: clean and robust loss/accuracy under an attack, evaluation along a path,
robust ensembles of path points.
"""
