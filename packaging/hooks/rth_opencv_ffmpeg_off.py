"""Runtime hook: OpenCV's FFmpeg backend is off in the frozen app.

The app decodes and records files with PyAV (engine.sources, engine.sinks); OpenCV captures cameras
through V4L2. The installer ships stand-ins for OpenCV's FFmpeg libraries (packaging/stub_libs.py), so
OpenCV must not try them: with its backend priority at 0 it skips FFmpeg, and a file handed to OpenCV
fails to open instead of stopping the app.
"""

import os

os.environ["OPENCV_VIDEOIO_PRIORITY_FFMPEG"] = "0"
