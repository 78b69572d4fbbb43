"""Stylecast training pipeline (PyTorch): StyleGAN2-ADA, U-GAT-IT, students, export, evaluation.

May import the engine (alignment template, bundle schema, backends) so training crops and bundles
match run time exactly; never imports the GUI.
"""
