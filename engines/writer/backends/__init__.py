"""Model backends of the scene writer, behind one small interface (:class:`ChatBackend`)."""

from engines.writer.backends.base import ChatBackend, Message

__all__ = ["ChatBackend", "Message"]
