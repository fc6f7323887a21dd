"""One PNG summarising predictions over time: valence and arousal, an AU heat map, the expression timeline
and a valence-arousal circumplex scatter. Needs matplotlib (``pip install keras-mtanet[plot]``)."""

import os
from pathlib import Path

import numpy as np

from keras_mtanet import files
from keras_mtanet.errors import DataError, DependencyError
from keras_mtanet.files import AtomicFile, printable
from keras_mtanet.inference.records import AU_PROB_COLUMNS, check_writable
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES


def _matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyError("--plot needs matplotlib: pip install 'keras-mtanet[plot]'") from None
    return plt


def plot_formats():
    """The file suffixes matplotlib can write (png, pdf, svg, jpg, ...), without the dot."""
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_plot_path(path):
    """``DataError`` unless ``path`` has a suffix matplotlib writes and can be written (before any work);
    ``DependencyError`` without matplotlib."""
    formats = plot_formats()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise DataError(f"{printable(path)}: the plot's suffix must be one of "
                        f"{', '.join('.' + f for f in formats)}")
    check_writable(path, "plot")


def _time_axis(records):
    """x values and label: seconds when every record has a timestamp from one source, else the row order."""
    sources = {r["source"] for r in records}
    stamps = [r["timestamp"] for r in records]
    if len(sources) == 1 and all(t is not None and t == t for t in stamps):
        return np.array(stamps, np.float64), "time (s)"
    # Number the frames in the order they were read (several sources or still images).
    order = {}
    for r in records:
        order.setdefault((r["source"], r["frame"]), len(order))
    return np.array([order[(r["source"], r["frame"])] for r in records], np.float64), "frame (input order)"


def plot_records(records, path, title=None):
    """Write the four-panel summary of ``records`` (dicts as from ``Predictor``) to ``path`` (PNG, or any
    suffix of ``plot_formats``), under a temporary name renamed onto ``path`` when complete.

    Each face id gets its own line in the VA panel and its own points in the circumplex; the AU heat map
    and the expression timeline show the face seen in the most frames.
    """
    plt = _matplotlib()
    file_format = Path(path).suffix.lower().lstrip(".")
    if file_format not in plot_formats():
        check_plot_path(path)  # raises the one-line error
    records = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    x_all, x_label = _time_axis(records)
    faces = {}  # (source, face id) -> [(x, record), ...]
    for x, r in zip(x_all, records):
        if r["face_detected"]:
            faces.setdefault((r["source"], int(r["face_id"])), []).append((x, r))
    one_source = len({source for source, _ in faces}) <= 1

    def name(key):
        return f"face {key[1]}" if one_source else f"{printable(os.path.basename(key[0]))} face {key[1]}"

    fig, axes = plt.subplots(2, 2, figsize=(13, 8), gridspec_kw={"width_ratios": [2.2, 1]})
    (ax_va, ax_circ), (ax_au, ax_expr) = axes
    if title:
        fig.suptitle(printable(title))

    first = min(faces) if faces else None
    for key, rows in sorted(faces.items()):
        xs = [x for x, _ in rows]
        suffix = f" ({name(key)})" if len(faces) > 1 else ""
        ax_va.plot(xs, [r["valence"] for _, r in rows], label="valence" + suffix)
        ax_va.plot(xs, [r["arousal"] for _, r in rows], "--", label="arousal" + suffix)
        ax_circ.scatter([r["valence"] for _, r in rows], [r["arousal"] for _, r in rows], c=xs, cmap="viridis",
                        s=12, marker="o" if key == first else "^")
    missing = [x for x, r in zip(x_all, records) if not r["face_detected"]]
    if missing:
        ax_va.plot(missing, np.zeros(len(missing)), "|", color="grey", label="no face")
    ax_va.set_ylim(-1.05, 1.05)
    ax_va.axhline(0.0, color="black", linewidth=0.5)
    ax_va.set_xlabel(x_label)
    ax_va.set_title("valence and arousal")
    if len(faces) <= 6:
        ax_va.legend(loc="upper right", fontsize="small")

    circle = np.linspace(0, 2 * np.pi, 200)
    ax_circ.plot(np.cos(circle), np.sin(circle), color="grey", linewidth=0.7)
    ax_circ.axhline(0.0, color="grey", linewidth=0.5)
    ax_circ.axvline(0.0, color="grey", linewidth=0.5)
    ax_circ.set_xlim(-1.1, 1.1)
    ax_circ.set_ylim(-1.1, 1.1)
    ax_circ.set_aspect("equal")
    ax_circ.set_xlabel("valence")
    ax_circ.set_ylabel("arousal")
    ax_circ.set_title("circumplex (colour: time)")

    main = max(faces, key=lambda k: len(faces[k])) if faces else None
    rows = faces.get(main, [])
    xs = np.array([x for x, _ in rows])
    if rows:
        heat = np.array([[r[c] for c in AU_PROB_COLUMNS] for _, r in rows]).T
        extent = (xs.min(), xs.max() if xs.max() > xs.min() else xs.min() + 1, len(AU_NAMES) - 0.5, -0.5)
        image = ax_au.imshow(heat, aspect="auto", cmap="magma", vmin=0.0, vmax=1.0, extent=extent,
                             interpolation="nearest")
        fig.colorbar(image, ax=ax_au, fraction=0.03, label="probability")
        expr = np.array([EXPR_NAMES.index(r["expression"]) for _, r in rows])
        ax_expr.scatter(xs, expr, c=expr, cmap="tab10", vmin=0, vmax=9, s=10)
    ax_au.set_yticks(range(len(AU_NAMES)))
    ax_au.set_yticklabels(AU_NAMES)
    ax_au.set_xlabel(x_label)
    ax_au.set_title("action units" + (f" ({name(main)})" if len(faces) > 1 else ""))
    ax_expr.set_yticks(range(len(EXPR_NAMES)))
    ax_expr.set_yticklabels(EXPR_NAMES)
    ax_expr.set_ylim(-0.5, len(EXPR_NAMES) - 0.5)
    ax_expr.set_xlabel(x_label)
    ax_expr.set_title("expression" + (f" ({name(main)})" if len(faces) > 1 else ""))
    fig.tight_layout()
    try:
        with AtomicFile(path, "wb", user_file=True) as f:
            try:
                fig.savefig(f.file, dpi=90, format=file_format)
            except OSError as error:
                raise files.write_error(path, error) from None
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------- faces drawn on photos
# Drawn with OpenCV (always installed), so the demo's picture needs no matplotlib.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def check_image_path(path):
    """``DataError`` unless ``path`` ends in a suffix ``draw_faces`` pictures can be written as and its folder
    can be written (checked before any work)."""
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{printable(path)}: the picture's suffix must be one of {', '.join(IMAGE_SUFFIXES)}")
    check_writable(path, "plot")


def draw_faces(images, records, names):
    """The ``images`` (H x W x 3 RGB) side by side with each detected face's box, expression, valence/arousal
    and active AUs written beside it (an AU the preset marks unreliable with ``?``); ``records`` come from
    ``Predictor`` with ``source`` in ``names``."""
    import cv2

    height = max(image.shape[0] for image in images)
    panels = []
    for image, name in zip(images, names):
        panel = np.full((height + 24, image.shape[1], 3), 255, np.uint8)
        panel[:image.shape[0]] = image
        scale = max(0.4, min(1.0, image.shape[1] / 900))
        for r in (r for r in records if r["source"] == name and r["face_detected"]):
            x, y, w, h = (int(round(r[k])) for k in ("x", "y", "w", "h"))
            cv2.rectangle(panel, (x, y), (x + w, y + h), (40, 220, 40), 2)
            unreliable = (r.get("unreliable_aus") or "").split()
            aus = " ".join(au + ("?" if au in unreliable else "") for au in AU_NAMES if r[au]) or "no AU"
            lines = [f"{r['expression']} {r[r['expression'] + '_prob']:.2f}",
                     f"V {r['valence']:+.2f} A {r['arousal']:+.2f}", aus]
            ty = y + h + int(22 * scale) if y + h + 3 * int(22 * scale) < image.shape[0] else max(14, y - 50)
            for i, text in enumerate(lines):
                origin = (x, ty + i * int(22 * scale))
                cv2.putText(panel, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 4, cv2.LINE_AA)
                cv2.putText(panel, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1,
                            cv2.LINE_AA)
        cv2.putText(panel, printable(name)[:60], (6, height + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)
