"""The pure half of the MAPE-K loop: data in, data out, ``now`` passed in, no I/O.

An import-linter contract keeps sockets, clocks, threads and files out of this package.
"""
