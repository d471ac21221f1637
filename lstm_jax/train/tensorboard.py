"""TensorBoard event files, written with tensorboardX (no TensorFlow). The only module that imports it.

``Writer(logdir)`` logs scalars per epoch (``scalars``), the run's hyperparameters with the metrics
they led to (``hparams``, TensorBoard's HPARAMS tab) and text. On resume pass ``purge_step``: the
epochs after the checkpoint are trained again, and TensorBoard drops their old points.
"""

from __future__ import annotations

from typing import Any

from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as _hparams_summaries


class Writer:
    def __init__(self, logdir: str, *, purge_step: int | None = None):
        self._w = SummaryWriter(logdir=logdir, purge_step=purge_step, flush_secs=30)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """``{'train/loss': 0.3, ...}`` at ``step`` (the epoch, for per-epoch curves)."""
        for tag, value in values.items():
            self._w.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str) -> None:
        self._w.add_text(tag, text, 0)

    def image(self, tag: str, png_path: str) -> None:
        """A picture the run drew (e.g. the confusion matrix), read back from its PNG file."""
        import matplotlib.image

        img = matplotlib.image.imread(png_path)[..., :3]  # RGBA floats in [0, 1] -> RGB
        self._w.add_image(tag, img, 0, dataformats="HWC")

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters (scalars and strings) with the final metrics of the run.

        ``metrics`` get their own tags (``hparams/<name>``) so that they do not mix with the curves.
        """
        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()}
        metric_tags = {f"hparams/{k}": float(v) for k, v in metrics.items()}
        for summary in _hparams_summaries(clean, metric_tags):
            self._w.file_writer.add_summary(summary)
        self.scalars(0, metric_tags)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()
