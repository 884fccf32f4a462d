"""Servers: the only layer that turns exceptions into status codes. Nothing below imports it."""
