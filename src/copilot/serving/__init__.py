"""Export of tuned strategies to the MLflow model registry and their serving to the live
server's copilot sidebar.

- :mod:`copilot.serving.export`: a fitted strategy as an MLflow pyfunc model, registered as ``copilot-<chatbot>``
  with the alias ``champion``.
- :mod:`copilot.serving.champions`: loads ``models:/copilot-<chatbot>@champion`` per chatbot, caches it per version,
  follows the alias, and answers suggestions off the event loop (used by the server's ``handoff.champions``).
"""
