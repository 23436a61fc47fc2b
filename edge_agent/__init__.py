"""BrightKitchen edge agent: camera video in, violation events out."""

__version__ = "0.1.0"
