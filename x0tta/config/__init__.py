"""Configuration: typed settings, their defaults with reasons, loading and validation.

Pure except for :mod:`x0tta.config.loader`, which reads the file and the environment.
"""
