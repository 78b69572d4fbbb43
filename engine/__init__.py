"""Stylecast real-time engine: sources, face tracking, alignment, stylizer backends, blending.

Runtime-only: numpy, OpenCV, mediapipe, onnxruntime, MNN. Never torch, Qt or training code, so the
live app stays small and the training pipeline can reuse the alignment and bundle schema.
"""
