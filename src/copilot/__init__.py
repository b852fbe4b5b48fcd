"""The copilot workbench: recorded conversations, reply-suggestion strategies, evaluation, replay and serving."""

__version__ = "0.1.0"
