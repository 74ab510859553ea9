"""One pipeline per command, each a short sequence over the library: endpoint training, connect,
bench, and the endpoint pair they start from.
"""
