"""The one error a parser raises: a message safe to show the client (never parser internals)."""


class ProtocolError(ValueError):
    pass
