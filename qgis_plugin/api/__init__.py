"""Talking to the backend: HTTP clients (asynchronous for the GUI thread, blocking for workers) and
the contract they follow. No widgets here."""
