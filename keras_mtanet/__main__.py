import sys

from keras_mtanet.cli import main

sys.exit(main())
