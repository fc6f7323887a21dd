"""The old name of ``keras_mtanet.presets`` (the preset folder format, registry and model card), kept so that
``from keras_mtanet import zoo`` and ``keras_mtanet.zoo.save_preset(...)`` go on working.

This module replaces itself with ``keras_mtanet.presets`` rather than copying its names, so the two are one
module: code that sets ``zoo.DEFAULT_PRESET`` (or patches a function, as tests do) changes what
``presets.load`` uses, as it did before the move.
"""

import sys

from keras_mtanet import presets

sys.modules[__name__] = presets
