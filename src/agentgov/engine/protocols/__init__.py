"""Pure protocol parsers: request bytes in, policy-relevant fields out. No I/O, easy to fuzz."""

from agentgov.engine.protocols.errors import ProtocolError

__all__ = ["ProtocolError"]
