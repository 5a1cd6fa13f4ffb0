"""The ``x0tta`` command: operator tools in the spirit of batctl."""
