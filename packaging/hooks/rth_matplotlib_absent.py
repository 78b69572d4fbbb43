"""Runtime hook: the frozen app leaves matplotlib out, yet mediapipe's package imports it on start.

``mediapipe.python.solutions.drawing_utils`` imports ``matplotlib.pyplot`` at module level for a plotting
helper the live app never calls. Placeholder modules let that import succeed; touching them says why
they are empty. This saves matplotlib, Pillow, fontTools and kiwisolver (about 40 MB).
"""

import sys
import types


class _LeftOut(types.ModuleType):
    def __getattr__(self, name: str):
        raise AttributeError(f"{self.__name__}.{name}: matplotlib is not part of the Stylecast installer")


_matplotlib = _LeftOut("matplotlib")
_matplotlib.pyplot = _LeftOut("matplotlib.pyplot")
sys.modules.setdefault("matplotlib", _matplotlib)
sys.modules.setdefault("matplotlib.pyplot", _matplotlib.pyplot)
