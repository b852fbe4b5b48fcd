"""The live handoff server: bot escalations, first claim wins, live chat with typing, copilot suggestions."""

__version__ = "0.1.0"
