"""The progress bar of ``keras-mtanet predict``: frames done, faces found and frames per second, drawn by tqdm
on stderr."""

import sys

from tqdm import tqdm


class Progress:
    """A tqdm counter of frames (the total is not known ahead: videos may end early or be webcams).

    Args:
        enabled: True to draw, False not to, None (default) to draw only when ``stream`` is a terminal, so logs
            and pipes get no redraw noise.
        stream: where to draw (default: ``sys.stderr``).

    ``update(frames, faces)`` takes running totals (``Predictor.stream``'s progress callback); ``message(text)``
    prints a line above the bar without breaking it.
    """

    def __init__(self, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=None, unit=" frames", file=self.stream, disable=not enabled, dynamic_ncols=True,
                        mininterval=0.25, leave=False)

    def update(self, frames, faces):
        if self.bar.disable:
            return
        self.bar.set_postfix_str(f"{faces} faces", refresh=False)
        self.bar.update(frames - self.bar.n)

    def message(self, text):
        """Print ``text`` as one line on the bar's stream, above the bar."""
        if self.bar.disable:
            print(text, file=self.stream, flush=True)
        else:
            self.bar.write(text, file=self.stream)

    def close(self):
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
