"""The web app: the control API for a browser page, served by the daemon itself.

:mod:`.server` (Starlette on Hypercorn's trio worker), :mod:`.guard` (the pure security
checks), :mod:`.token` (the token file), :mod:`.uploads` (staged uploads), :mod:`.off` (the
stand-in when the config turns the web app off). ``static/`` holds the page's assets.
"""
