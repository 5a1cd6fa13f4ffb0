"""The composition root: builds the subsystems from settings, supervises them, talks to systemd.

This is the only package that imports every other one.
"""
