"""Backups of a node: its SQLite stores, keys, SVID and built-in CA state in one signed bundle.

``x0tta backup create|verify|restore`` (:mod:`x0tta.cli.backup`). The manifest and its checks are
pure, in :mod:`x0tta.backup.core`; reading and writing stores, files and bundles is in
:mod:`x0tta.backup.bundle`.
"""
