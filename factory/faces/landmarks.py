"""MediaPipe Face Mesh (478 points, the model bundled in the wheel) behind a small interface."""

from __future__ import annotations

import os

import numpy as np

# MediaPipe's C++ logging prints a few harmless warnings per graph; keep worker logs readable.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Landmark index groups of MediaPipe's 478-point mesh.
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
MOUTH = LIPS_OUTER + LIPS_INNER
# Points that do not move when a person speaks: eyes, brows, nose bridge, upper cheeks.
RIGID = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 234, 454, 127, 356, 70, 300, 105, 334]
# Lower face (below the nose, down around the jaw): the region a mask-based generator re-renders.
LOWER_FACE = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
              2, 98, 327, 205, 425, 203, 423]
INNER_LIP_GAP = (13, 14)  # upper / lower inner lip centre: their distance is the mouth opening
NUM_LANDMARKS = 478


class FaceLandmarker:
    """Detects up to `max_faces` + 1 faces per RGB frame (one more than allowed, to notice extras).

    In tracking mode (static=False) MediaPipe re-uses the previous frame's face box, which is
    what makes it fast on video; call `reset()` at a scene cut.
    """

    def __init__(self, static: bool = False, max_faces: int = 1, min_confidence: float = 0.5):
        self.static = static
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self._mesh = None

    def _open(self):
        import mediapipe as mp  # imported lazily: heavy, and only needed on workers

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=self.static,
            max_num_faces=self.max_faces + 1,
            refine_landmarks=True,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        )

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Faces found in one frame, each a (478, 3) float32 array in pixel coordinates (x, y, z)."""
        if self._mesh is None:
            self._open()
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            faces.append(pts)
        return faces

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
