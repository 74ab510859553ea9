"""Training: the resumable loop, the curve task, learning-rate schedules and PAM's permutation
updates.
"""
