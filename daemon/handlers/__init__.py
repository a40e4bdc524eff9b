"""The control API's method handlers, one module per concern (method namespace).

Each module exports ``METHODS: dict[str, Handler]``, its part of the method table;
:mod:`daemon.control` merges them and refuses a method defined twice. A new concern is a new
module here plus one line in ``daemon.control.HANDLER_MODULES``.

Handlers may import :mod:`p2pchat` (the engine), :mod:`daemon.params` and, for type checking
only, :class:`daemon.control.Session`; never each other, and never the server's framing. Calls
on the chat engine (``s.server.chat``) stay in :mod:`.friends` and :mod:`.messages`.
"""
