"""Stylecast desktop window (PySide6): preview, style picker, recording, virtual camera, training wizard.

Uses the engine only; training runs as a separate process driven through its JSON-line progress, so
the window never imports torch.
"""
