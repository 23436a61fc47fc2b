"""Live view relay: one stream from a box shared by every viewer (see relay.py)."""
