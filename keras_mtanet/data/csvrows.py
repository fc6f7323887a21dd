"""The data readers' CSV files, read row by row: every problem is one ``DataError`` naming the file and line."""

import csv

from keras_mtanet.errors import DataError

MAX_LINE_BYTES = 1 << 20  # a CSV line longer than this is refused before it is held whole


class CSVRows:
    """``csv.reader`` over a binary file, decoded line by line as UTF-8 (a byte-order mark allowed), so a line
    that is not UTF-8 (a Latin-1 export), a field over the csv module's limit or a line over ``MAX_LINE_BYTES``
    is a ``DataError`` naming the file and line, not a traceback. ``line_num`` is the reader's."""

    def __init__(self, path, f):
        self.path, self.file, self.number = path, f, 0
        self.reader = csv.reader(self._lines())

    def _lines(self):
        while True:
            raw = self.file.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            self.number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{self.path}:{self.number}: line longer than {MAX_LINE_BYTES >> 20} MiB; refused")
            try:
                yield raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{self.path}:{self.number}: not UTF-8 text (byte {raw[error.start]:#04x} at "
                                f"column {error.start + 1}); save the CSV as UTF-8") from None

    @property
    def line_num(self):
        return self.reader.line_num

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.reader)
        except csv.Error as error:
            raise DataError(f"{self.path}:{self.number}: unreadable CSV ({error})") from None
