"""The ``keras-mtanet`` command line."""

import argparse
import sys

from keras_mtanet.version import __version__


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mtanet",
        description="Multi-task facial affect (valence/arousal, action units, expressions) with MTANet.")
    parser.add_argument("--version", action="version", version=f"keras-mtanet {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
