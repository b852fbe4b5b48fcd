"""The workbench's side of the live server: the protocol's names (protocol), a client (client), links to the
browser pages (links) and the replay of recorded conversations through a running server (replay).

Kept free of imports: the server imports :mod:`copilot.live.protocol` and :mod:`copilot.live.links`.
"""
