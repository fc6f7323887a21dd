"""``keras-mtanet teach``: label FER+ with teachers: AUs from MediaPipe blendshapes, valence/arousal from the votes."""


def add_arguments(p):
    from keras_mtanet.data.ferplus import SPLITS
    from keras_mtanet.data.formats import formats_for

    formats = formats_for("teach")

    p.add_argument("--data", required=True, help="FER+ root (FER2013Train/, FER2013Valid/, FER2013Test/)")
    p.add_argument("--format", default=formats[0], choices=formats)
    p.add_argument("--teacher-model", required=True, metavar="PATH",
                   help="MediaPipe face_landmarker.task (from Google's MediaPipe Face Landmarker page; its sha256 "
                        "is checked)")
    p.add_argument("--output", required=True, metavar="LABELS.csv", help="the label cache to write")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits to label (default: all)")


def run(args):
    from keras_mtanet.teachers import teach

    teach.teach(args.data, args.teacher_model, args.output, splits=tuple(dict.fromkeys(args.splits)),
                data_format=args.format, quiet=not args.verbose)
    return 0
