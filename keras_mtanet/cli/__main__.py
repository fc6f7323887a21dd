"""``python -m keras_mtanet.cli``: the ``keras-mtanet`` command."""

import sys

from keras_mtanet.cli import main

sys.exit(main())
