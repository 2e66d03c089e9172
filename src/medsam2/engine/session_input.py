"""What the model sees: the scan itself, or another image of the same study on the scan's grid
(T1c where the scan is FLAIR, PET where it is CT). Mixed into :class:`medsam2.engine.session.Session`.

Switching changes what later propagations, corrections and box checks encode; the objects' answers
so far stay as they are (prompt or correct them again to have them from the other image), and the
session's outputs keep the scan's geometry and DICOM references.
"""

from __future__ import annotations

from medsam2.engine.session_results import BoxProbes
from medsam2.errors import PromptError
from medsam2.io.resample import same_grid
from medsam2.io.slicing import to_frames
from medsam2.io.volume import Volume, size_text
from medsam2.io.windows import WindowedFrames, choose_window


class ModelInput:
    """:meth:`use_image`: the image the model encodes (the session provides ``volume``,
    ``voxel_axis``, ``cache``, ``shape``, ``intensity``, ``frames``, ``window``, ``scan_window`` and ``_probes``)."""

    #: the other image the model sees, None where it sees the scan
    model_image: Volume | None = None

    def use_image(self, image: Volume | None, window: str | None = None) -> None:
        """Let the model see ``image`` from now on (None: the scan again).

        Arguments:
            image: another image of the study with the scan's voxel grid
                (:func:`medsam2.io.resample.resample_onto` puts one there).
            window: its intensity window (see :func:`medsam2.io.windows.choose_window`); None:
                "auto" for an image, the window the session was opened with for the scan.

        Raises:
            PromptError: an image on another grid, or a colour image.
            UsageError: an unknown window. InputError: a constant image.
        """
        source = self.volume if image is None else image
        if window is None:
            window = self.scan_window if image is None else "auto"
        if image is not None:
            if image.array.ndim != 3:
                raise PromptError("the model's other image is grey (one value per voxel); this one is a colour image")
            if not same_grid(image, self.volume):
                raise PromptError(f"the image ({size_text(image.array.shape)}) is not on the scan's grid "
                                  f"({size_text(self.volume.array.shape)}): resample it onto the scan first "
                                  "(medsam2.io.resample.resample_onto)")
        self._see(source, window)
        self.model_image = image

    def _see(self, source: Volume, window: str) -> None:
        """The model's frames of ``source`` (the scan or an image on its grid) in ``window``, and
        the box probes over them (the sanity warnings' answers to single boxes).

        Raises:
            UsageError: an unknown window. InputError: a constant image.
        """
        raw = to_frames(source.array, self.voxel_axis)
        intensity = choose_window(raw, window, source.modality)
        intensity.require_structure(source.source)
        #: the intensity window asked for (``intensity`` is what it chose)
        self.intensity, self.window = intensity, window
        self.frames = WindowedFrames(raw, intensity)
        self._probes = BoxProbes(self.cache, self.frames, self.shape[1], self.shape[2])
