"""Importers into the recorded-conversation format: STAR (the public corpus) and the generic JSON Lines format."""
