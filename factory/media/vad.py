"""Speech detection with silero-vad (its ONNX model ships inside the wheel: no download)."""

from __future__ import annotations

import numpy as np


class SpeechDetector:
    def __init__(self, threshold: float = 0.5, sample_rate: int = 16000):
        self.threshold = threshold
        self.sample_rate = sample_rate
        self._model = None

    def speech_mask(self, samples: np.ndarray) -> np.ndarray:
        """Boolean per sample: True where silero-vad hears speech."""
        import silero_vad
        import torch

        if self._model is None:
            self._model = silero_vad.load_silero_vad(onnx=True)
        wav = torch.from_numpy(samples.astype(np.float32) / 32768.0)
        spans = silero_vad.get_speech_timestamps(wav, self._model, threshold=self.threshold,
                                                 sampling_rate=self.sample_rate)
        mask = np.zeros(len(samples), bool)
        for span in spans:
            mask[span["start"]:span["end"]] = True
        return mask
