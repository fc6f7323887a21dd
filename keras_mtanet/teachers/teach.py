"""``keras-mtanet teach``: run the AU and valence/arousal teachers over FER+ and write the label cache.

The work is done in parts of ``CHUNK`` images, each written whole to ``OUTPUT.parts/`` (temporary name, then a
rename), so an interrupted run loses at most the part in progress and a rerun of the same command skips every
image already written. When every image is done the parts are merged into ``OUTPUT`` (again through a
temporary name; each part is written sorted, so the merge streams row by row and memory stays flat however large
the data set) and ``OUTPUT.json`` records the settings, the share of faces found and the time per split. A
rerun over a finished cache only adds images it lacks. Each image's result depends on that image alone (the
landmarker runs in image mode, without tracking), so a resumed run ends with the same file as one that was not
interrupted.
"""

import json
import shutil
import time
from pathlib import Path

from keras_mtanet import files
from keras_mtanet.data import ferplus
from keras_mtanet.data.formats import formats_for
from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.inference.records import check_writable
from keras_mtanet.teachers import au as au_teacher
from keras_mtanet.teachers import cache, landmarker, va

CHUNK = 500


def _key(folder, path):
    return f"{folder}/{Path(path).name}"


def _settings(lm):
    settings = {"landmarker": lm.settings(), "au_mapping": au_teacher.mapping_summary(),
                "va_coordinates": {k: v for k, v in va.VA_COORDINATES.items() if v is not None},
                "va_source": va.SOURCE}
    return json.loads(json.dumps(settings))  # as read back from JSON (tuples become lists)


def _write_json(path, data):
    try:
        files.write_atomic(path, files.dump_json(data))
    except OSError as error:
        raise files.write_error(path, error) from None


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None


def teach(root, model_path, output, splits=ferplus.SPLITS, data_format="ferplus", chunk=CHUNK, log=print,
          quiet=False):
    """Write the teacher label cache ``output`` for the images ``ferplus.read_index`` keeps in ``splits``.

    Returns:
        ``{split: {"images", "found", "found_share", "seconds"}}`` over the whole cache (``seconds``: landmarker
        time summed over all runs that worked on the split).

    Raises:
        DataError: bad data (see ``ferplus.read_index``), a bundle with the wrong hash, or an output that was
            started with other settings.
    """
    if data_format not in formats_for("teach"):
        raise UsageError(f"teach: unknown data format {data_format!r}; choose one of "
                         f"{', '.join(formats_for('teach'))}")
    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    summary_path = output.with_name(output.name + ".json")
    folders = [ferplus.split_folder(s) for s in splits]
    # One parse of each label.csv: the index carries the raw votes the valence/arousal teacher needs.
    indexes = {folder: ferplus.read_index(root, split) for split, folder in zip(splits, folders)}
    if not output.parent.is_dir():
        raise DataError(f"{output.parent}: output folder not found")
    check_writable(output, "teacher label")  # a folder, a read-only place: said before the landmarker loads

    with landmarker.FaceLandmarker(model_path, quiet=quiet) as lm:  # quiet: no native start-up lines
        settings = _settings(lm)
        done = set()  # keys only: the rows stay on disk and are merged from there at the end
        timing = {}
        if output.exists():
            if not summary_path.exists():
                raise DataError(f"{output}: exists, but {summary_path.name} (the settings file teach writes beside "
                                "its label cache) does not, so it is no label cache teach can add to; choose another "
                                "--output")
            previous = _read_json(summary_path)
            if previous.get("settings") != settings:
                raise DataError(f"{output}: was written with other teacher settings ({summary_path.name}); "
                                "choose another --output")
            done.update(row[0] for row in cache.iter_rows(output))
            timing = {k: dict(v) for k, v in previous.get("timing", {}).items()}
        if parts.exists():
            started = parts / "settings.json"
            if not started.exists() or _read_json(started) != settings:
                raise DataError(f"{parts}: an unfinished run with other teacher settings; delete it or choose "
                                "another --output")
            for part in sorted(parts.glob("part-*.csv")):
                rows = list(cache.iter_rows(part))  # one part: at most a chunk of rows
                done.update(row[0] for row in rows)
                if rows != sorted(rows, key=_order):  # a part from a version that did not sort them
                    cache.write_rows(part, sorted(rows, key=_order))
            if (parts / "timing.json").exists():
                for folder, t in _read_json(parts / "timing.json").items():
                    timing[folder] = t
        todo = {f: [i for i, p in enumerate(idx.paths) if _key(f, p) not in done] for f, idx in indexes.items()}
        del done  # only needed to find what is left: the pass itself keeps no per-image state
        if any(todo.values()):
            parts.mkdir(exist_ok=True)
            _write_json(parts / "settings.json", settings)
        number = len(list(parts.glob("part-*.csv"))) if parts.exists() else 0
        for folder, index in indexes.items():
            pending = todo[folder]
            spent = timing.setdefault(folder, {"seconds": 0.0, "images": 0})
            total = len(index)
            if not pending:
                log(f"{folder}: all {total} images already in the cache")
                continue
            log(f"{folder}: {total - len(pending)} of {total} images already done, {len(pending)} to go")
            for start in range(0, len(pending), chunk):
                began = time.perf_counter()
                rows = sorted((_teach_one(lm, folder, index.paths[i], index.votes[i])
                               for i in pending[start:start + chunk]), key=_order)
                while (parts / f"part-{number:05d}.csv").exists():
                    number += 1
                cache.write_rows(parts / f"part-{number:05d}.csv", rows)
                number += 1
                spent["seconds"] += time.perf_counter() - began
                spent["images"] += len(rows)
                _write_json(parts / "timing.json", timing)
                finished = start + len(rows)
                rate = spent["images"] / max(spent["seconds"], 1e-9)
                log(f"{folder}: {total - len(pending) + finished}/{total} images, {rate:.0f} images/s, "
                    f"about {(len(pending) - finished) / rate / 60:.1f} min left in this split")

    # Each source is sorted, so a streamed merge gives the order a full sort would, holding one row per source.
    sources = ([output] if output.exists() else []) + (sorted(parts.glob("part-*.csv")) if parts.exists() else [])
    counts = {}
    cache.write_rows(output, _counted(cache.merge_sorted(sources, key=_order), counts), user_file=True)
    report = _report(counts, timing)
    _write_json(summary_path, {"settings": settings, "timing": timing, "splits": report})
    if parts.exists():
        shutil.rmtree(parts)
    for folder, r in report.items():
        log(f"{folder}: {r['found']} of {r['images']} faces found ({100 * r['found_share']:.1f} %), "
            f"{r['seconds'] / 60:.1f} min of landmarker time")
    log(f"teacher labels: {output}")
    return report


def _split_order(key):
    folder = key.split("/", 1)[0]
    order = [ferplus.SPLIT_FOLDERS[s] for s in ferplus.SPLITS]
    return order.index(folder) if folder in order else len(order)


def _order(row):
    """The cache's row order: split (train, valid, test), then image key."""
    return _split_order(row[0]), row[0]


def _counted(rows, counts):
    """Pass ``rows`` through, counting images and found faces per split folder into ``counts``."""
    for row in rows:
        r = counts.setdefault(row[0].split("/", 1)[0], {"images": 0, "found": 0})
        r["images"] += 1
        r["found"] += row[1] == "1"
        yield row


def _report(counts, timing):
    report = counts
    for folder, r in report.items():
        r["found_share"] = round(r["found"] / max(r["images"], 1), 4)
        r["seconds"] = round(timing.get(folder, {}).get("seconds", 0.0), 1)
    return report


def _teach_one(lm, folder, path, votes):
    gray = landmarker.read_gray(path)
    seen = lm.observe(gray) if gray is not None else None
    derived = va.derive_va(votes)
    if seen is None or not seen.found:
        nan = [float("nan")]
        return cache.format_row(_key(folder, path), False, [], derived, nan * len(landmarker.BLENDSHAPE_NAMES),
                                nan * len(landmarker.GEOMETRY_NAMES))
    probabilities = au_teacher.au_probabilities(seen.features())
    return cache.format_row(_key(folder, path), True, probabilities, derived, seen.blendshapes, seen.geometry)

