import numpy as np
import pytest
import tensorflow as tf

from keras_mtanet.data import affectnet, datasets
from keras_mtanet.errors import DataError

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"


def image_with_face(path, box, size=(60, 80)):
    """A blue image with a red face box, so a crop of the box is all red."""
    img = np.zeros(size + (3,), np.uint8)
    img[..., 2] = 255
    x, y, w, h = box
    img[y:y + h, x:x + w] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(img).numpy())


@pytest.fixture
def affectnet_root(tmp_path):
    images = tmp_path / "Manually_Annotated_Images"
    rows = [("1/a.png", (10, 12, 30, 30), 1, 0.5, 0.25),    # Happy -> Happiness (4)
            ("1/b.png", (0, 0, 20, 20), 7, -0.3, 0.6),     # Contempt -> -1
            ("2/c.png", (40, 20, 40, 40), 6, -0.7, 0.8),   # Anger -> 1, box overflows the image
            ("2/d.png", (5, 5, 20, 20), 10, -2.0, -2.0),   # No-Face, VA -2 -> unannotated
            ("3/missing.png", (5, 5, 20, 20), 0, 0.0, 0.0)]
    lines = [HEADER]
    for rel, box, code, v, a in rows:
        if "missing" not in rel:
            image_with_face(images / rel, box)
        lines.append(f'{rel},{box[0]},{box[1]},{box[2]},{box[3]},"1.0;2.0",{code},{v},{a}\n')
    (tmp_path / "training.csv").write_text("".join(lines))
    return tmp_path


def test_affectnet_codes_and_va_are_remapped(affectnet_root):
    index = affectnet.read_index(affectnet_root, "train")
    assert [p.rsplit("/", 1)[1] for p in index.paths] == ["a.png", "b.png", "c.png", "d.png"]
    np.testing.assert_array_equal(index.expr, [4, -1, 1, -1])
    np.testing.assert_allclose(index.va, [[0.5, 0.25], [-0.3, 0.6], [-0.7, 0.8], [-5, -5]])
    assert np.all(index.au == -1)
    np.testing.assert_array_equal(index.frames, [2, 3, 4, 5])
    assert index.stats["missing_images"] == 1 and index.stats["expression_unmapped"] == 2


def test_pipeline_crops_the_face_box(affectnet_root):
    index = affectnet.read_index(affectnet_root, "train")
    images, labels = next(iter(datasets.make_dataset(index, image_size=16, batch_size=4)))
    red = images.numpy()[..., 0].mean(axis=(1, 2))
    blue = images.numpy()[..., 2].mean(axis=(1, 2))
    assert np.all(red[[0, 1, 2]] > 250) and np.all(blue[[0, 1, 2]] < 5)  # clipped box still all face
    np.testing.assert_array_equal(labels["expr"].numpy(), [4, -1, 1, -1])


def test_affectnet_errors(tmp_path, affectnet_root):
    with pytest.raises(DataError, match="AffectNet root not found"):
        affectnet.read_index(tmp_path / "nope")
    with pytest.raises(DataError, match="validation.csv: AffectNet split file not found"):
        affectnet.read_index(affectnet_root, "val")
    csv = affectnet_root / "training.csv"
    csv.write_text(HEADER + "1/a.png,1,2,3,4,,1,0.1,0.1\n1/a.png,x,2,3,4,,1,0.1,0.1\n")
    with pytest.raises(DataError, match=f"^{csv}:3: malformed row"):
        affectnet.read_index(affectnet_root)
    csv.write_text(HEADER + "1/a.png,1,2,3,4,,12,0.1,0.1\n")
    with pytest.raises(DataError, match=f"^{csv}:2: expression code 12"):
        affectnet.read_index(affectnet_root)
    csv.write_text("subDirectory_filePath,face_x,expression\n")
    with pytest.raises(DataError, match=f"^{csv}:1: missing column"):
        affectnet.read_index(affectnet_root)


@pytest.mark.parametrize("valence, arousal", [(7, 0.1), (0.2, 9), (-3, 0.0), ("nan", 0.0)])
def test_affectnet_refuses_va_out_of_range_but_keeps_minus_two_unrated(affectnet_root, valence, arousal):
    csv = affectnet_root / "training.csv"
    csv.write_text(HEADER + "1/a.png,1,2,3,4,,1,0.1,0.1\n" + f"1/a.png,1,2,3,4,,1,{valence},{arousal}\n")
    with pytest.raises(DataError, match=f"^{csv}:3: valence/arousal must lie in \\[-1, 1\\] or be -2 \\(unrated\\)"):
        affectnet.read_index(affectnet_root)


@pytest.mark.parametrize("row, message", [
    ("1/a.png,inf,2,3,4,,1,0.1,0.1", "malformed row '1/a.png,inf,"),  # once an OverflowError traceback
    ("1/a.png,1,2,3,4,,1e400,0.1,0.1", "malformed row '1/a.png,1,2,3,4,,1e400,"),
    ("1/a.png,1,2,nan,4,,1,0.1,0.1", "malformed row"),
    ('1/a.png,1,2,3,4,"' + "7" * 131_073 + '",1,0.1,0.1', "unreadable CSV \\(field larger than field limit"),
])
def test_affectnet_bad_numbers_and_huge_fields_are_one_line(affectnet_root, row, message):
    csv = affectnet_root / "training.csv"
    csv.write_text(HEADER + "1/a.png,1,2,3,4,,1,0.1,0.1\n" + row + "\n")
    with pytest.raises(DataError, match=f"^{csv}:3: {message}"):
        affectnet.read_index(affectnet_root)


def test_affectnet_latin1_csv_names_file_and_line(affectnet_root, capsys):
    from keras_mtanet.cli import main

    csv = affectnet_root / "training.csv"
    csv.write_bytes((HEADER + "1/a.png,1,2,3,4,,1,0.1,0.1\n1/caf\u00e9.png,1,2,3,4,,1,0.1,0.1\n").encode("latin-1"))
    with pytest.raises(DataError, match=f"^{csv}:3: not UTF-8 text \\(byte 0xe9 at column 6\\)"):
        affectnet.read_index(affectnet_root)
    (affectnet_root / "validation.csv").write_text(HEADER)
    assert main(["train", "--data", str(affectnet_root), "--format", "affectnet", "--output",
                 str(affectnet_root / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"keras-mtanet: error: {csv}:3: not UTF-8 text")
    # A UTF-8 file with a byte-order mark still reads (Excel's "CSV UTF-8").
    csv.write_bytes(("\ufeff" + HEADER + "1/a.png,10,12,30,30,,1,0.5,0.25\n").encode("utf-8"))
    assert len(affectnet.read_index(affectnet_root)) == 1


@pytest.mark.parametrize("where", ["absolute", "climbing"])
def test_affectnet_image_paths_outside_the_root_are_refused(affectnet_root, tmp_path_factory, where):
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    image_with_face(outside, (10, 12, 30, 30))
    rel = str(outside) if where == "absolute" else "../" * len(affectnet_root.parts) + str(outside).lstrip("/")
    csv = affectnet_root / "training.csv"
    csv.write_text(HEADER + "1/a.png,10,12,30,30,,1,0.5,0.25\n" + f"{rel},10,12,30,30,,1,0.5,0.25\n")
    with pytest.raises(DataError, match=f"^{csv}:3: image path '.*secret.png' lies outside the data root "
                                        f"{affectnet_root}; refused$"):
        affectnet.read_index(affectnet_root)
    # An absolute path inside the root is the data set's own.
    inside = affectnet_root / "Manually_Annotated_Images" / "1" / "a.png"
    csv.write_text(HEADER + f"{inside},10,12,30,30,,1,0.5,0.25\n")
    assert affectnet.read_index(affectnet_root).paths == [str(inside)]
