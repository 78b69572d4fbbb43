"""U-GAT-IT: unsupervised real-face ↔ style translation (stage 2), and translation into training pairs.

``networks`` (generator with CAM attention and AdaLIN, global/local CAM discriminators), ``config``
(presets), ``data`` (two image domains with flip + resize-crop jitter), ``train`` (the ``ugatit``
stage), ``translate`` (a checkpoint as a pair teacher for ``train pairs --teacher ugatit:RUN``).
"""
