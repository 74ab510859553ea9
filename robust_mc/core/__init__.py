"""The mathematics: permutation structure, alignment, curves, batch-norm folding, barriers and
layer-wise barriers; no files, no command lines.
"""
