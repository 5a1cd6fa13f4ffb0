"""Pure building blocks shared by every subsystem: errors, health conditions, the subsystem contract.

No I/O happens in this package.
"""
