"""A one-line progress display on stderr: frames done, faces and frames per second."""

import sys
import time


class ProgressLine:
    """Redrawn in place on a terminal (at most 4 times a second); a line every 10 s when stderr is a file."""

    def __init__(self, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last, self._shown = self.start, False

    def update(self, frames, faces):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < (0.25 if self.tty else 10.0):
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        text = f"frames {frames}  faces {faces}  {frames / elapsed:.1f} frames/s"
        if self.tty:
            self.stream.write("\r" + text.ljust(60))
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self):
        if self._shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()
            self._shown = False

    def close(self):
        self.clear()
