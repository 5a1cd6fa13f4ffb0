"""x0tta: a self-healing batman-adv mesh node daemon."""

__version__ = "0.1.0"
