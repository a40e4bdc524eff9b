"""``p2pchatd``: the daemon process (:mod:`daemon.main`) and its control API server
(:mod:`daemon.control`: socket, framing, sessions, dispatch; :mod:`daemon.params`: parameter
checks; :mod:`daemon.handlers`: the methods, one module per concern).

The daemon may import :mod:`p2pchat` (the engine); :mod:`p2pchat` never imports
:mod:`daemon`, and neither does :mod:`cli`, which speaks only the control API.
"""
