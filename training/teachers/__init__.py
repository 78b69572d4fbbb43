"""Procedural teachers: slow, deterministic stylizers whose outputs students learn to reproduce in real time."""
