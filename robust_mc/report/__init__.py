"""What people read: path files and plots, bench tables, terminal progress.
"""
