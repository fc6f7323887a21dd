"""The record writer (keras_mtanet.inference.records): outputs are replaced only by complete files."""

import errno
import io
import json

import pytest
from conftest import leftovers

from keras_mtanet.errors import DataError
from keras_mtanet.inference import records, sources


@pytest.mark.safety
def test_a_failed_write_leaves_the_earlier_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("[earlier]")

    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    writer = records.RecordWriter(path)
    writer._file.file.close()
    writer._file.file = FullDisk()
    frame = sources.Frame("a.png", 0, None, None)
    with pytest.raises(DataError, match=r"out.json: cannot write \(No space left on device\)$"):
        with writer:
            writer.write([records.empty_record(frame)])
    assert path.read_text() == "[earlier]" and leftovers(tmp_path) == []


@pytest.mark.safety
def test_json_stays_valid_when_an_interrupt_lands_before_the_count(tmp_path):
    path = tmp_path / "out.json"
    frame = sources.Frame("a.png", 0, None, None)
    writer = records.RecordWriter(path)
    writer.write([records.empty_record(frame)])
    writer.count = 0  # as if Ctrl-C came between the write and the count's update
    writer.write([records.empty_record(frame), records.empty_record(frame)])
    assert writer.close()
    assert [r["face_detected"] for r in json.loads(path.read_text())] == [0, 0, 0]
