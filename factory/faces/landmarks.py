"""MediaPipe Face Mesh (478 points, the model bundled in the wheel) behind a small interface."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

# What MediaPipe's C++ side prints straight to file descriptor 2 while its graphs start, run and
# close, whatever GLOG_* / TF_CPP_* say (absl logging before InitializeLog; TFLite's delegate
# note): warnings and notes, from the graphs' own threads, at any time. Errors ("E0000") pass.
NATIVE_NOISE = (b"W0000 00:00:", b"I0000 00:00:", b"INFO: Created TensorFlow Lite",
                b"WARNING: All log messages before absl::InitializeLog()")


class NativeNoiseFilter:
    """While any landmarker is open, fd 2 goes through a pipe whose reader drops NATIVE_NOISE lines
    and passes every other line on (Python tracebacks included). One per process, counted:
    landmarkers may overlap (threads of the local executor). A line-level filter, not a time
    window: the graphs' threads print after `process()` has returned, too."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None
        self._reader: threading.Thread | None = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                sys.stderr.flush()
                read, write = os.pipe()
                self._saved = os.dup(2)
                os.dup2(write, 2)
                os.close(write)  # fd 2 is now the pipe's only write end: restoring it ends the reader
                self._reader = threading.Thread(target=_pass_on, args=(read, self._saved), daemon=True,
                                                name="native-stderr-filter")
                self._reader.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.stderr.flush()
                os.dup2(self._saved, 2)
                self._reader.join(timeout=5)  # a child process that inherited the pipe keeps it open
                if not self._reader.is_alive():
                    os.close(self._saved)
                self._saved = self._reader = None


def _pass_on(read: int, out: int) -> None:
    pending = b""
    while chunk := os.read(read, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        _write_all(out, b"".join(line + b"\n" for line in lines if not line.startswith(NATIVE_NOISE)))
    if not pending.startswith(NATIVE_NOISE):
        _write_all(out, pending)
    os.close(read)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


native_noise = NativeNoiseFilter()


# Landmark index groups of MediaPipe's 478-point mesh.
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
MOUTH = LIPS_OUTER + LIPS_INNER
# Points fixed to the skull: eye corners and the nose from bridge to tip. Not the brows or forehead
# (they rise with expression) nor the face silhouette (it slides over the face as the head turns):
# either makes the crop breathe with expression and yaw.
RIGID = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1]
BROWS = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 336, 296, 334, 293, 300, 285, 295, 282, 283, 276]
# Lower face (below the nose, down around the jaw): the region a mask-based generator re-renders.
LOWER_FACE = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
              2, 98, 327, 205, 425, 203, 423]
INNER_LIP_GAP = (13, 14)  # upper / lower inner lip centre: their distance is the mouth opening
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263  # outer eye corners: stable, far apart, always visible
NUM_LANDMARKS = 478


# One NormalizedLandmark on the wire when it holds exactly x, y, z: field tag, length 15, then
# three (tag, little-endian float32) fields. Face Mesh emits nothing else.
_LANDMARK_WIRE = np.dtype([("tag", "u1"), ("size", "u1"), ("x_tag", "u1"), ("x", "<f4"), ("y_tag", "u1"),
                           ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")])
_LANDMARK_TAGS = {"tag": 0x0A, "size": 15, "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}


def landmark_array(landmarks) -> np.ndarray:
    """(N, 3) float32 normalised x, y, z of a NormalizedLandmarkList. Read from its wire bytes
    when every landmark is exactly x, y, z: reading 478 protobuf objects in Python costs ~20x
    more, all of it holding the GIL that ingest's decode and crop threads need."""
    raw = landmarks.SerializeToString()
    if len(raw) == len(landmarks.landmark) * _LANDMARK_WIRE.itemsize:
        rows = np.frombuffer(raw, _LANDMARK_WIRE)
        if all((rows[name] == value).all() for name, value in _LANDMARK_TAGS.items()):
            return np.stack([rows["x"], rows["y"], rows["z"]], axis=1)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], np.float32)


class FaceLandmarker:
    """Faces in RGB frames, largest first, each a (478, 3) float32 array of pixel coordinates.

    MediaPipe Face Mesh finds faces with its short-range detector, which misses faces smaller
    than about half the frame height (a 720p interview shot). So faces are found with the
    full-range detector, and the mesh runs on a square region around the face; between
    detections the region follows the landmarks (tracking mode, which is what makes video fast).
    The detector re-runs every `redetect_every` frames to notice a second face entering.
    """

    def __init__(self, static: bool = False, max_faces: int = 1, min_confidence: float = 0.5,
                 redetect_every: int = 25, roi_scale: float = 2.0, min_face_share: float = 0.0):
        self.static = static
        self.max_faces = max_faces
        self.min_face_share = min_face_share  # faces smaller than this share of the largest are background
        self.min_confidence = min_confidence
        self.redetect_every = redetect_every
        self.roi_scale = roi_scale
        self._mesh = self._other_mesh = self._detector = None
        self._roi: tuple[float, float, float] | None = None  # centre x, centre y, side (pixels)
        self._since_detection = 0
        self._crowded = False

    def _open(self) -> None:
        # before MediaPipe's C++ side loads: whatever logs through glog or TF's logging stays at errors
        # (its absl warnings ignore these: NativeNoiseFilter)
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp  # imported lazily: heavy, and only needed on workers

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=self.static, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence)
        self._other_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=self.min_confidence)
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=self.min_confidence)  # full range: small faces too

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        if self._mesh is None:
            native_noise.acquire()  # until close()
            try:
                self._open()
            except BaseException:
                native_noise.release()
                raise
        return self._detect(rgb)

    def _detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        rgb = np.ascontiguousarray(rgb)
        due = (self.static or self._roi is None or self._crowded
               or self._since_detection >= self.redetect_every)
        rois = self._find_faces(rgb) if due else [self._roi]
        if due:
            self._crowded = len(rois) > 1  # while several faces are in view, count them every frame
        self._since_detection = 0 if due else self._since_detection + 1
        faces = []
        for i, roi in enumerate(rois):
            pts = self._mesh_in(rgb, roi, self._mesh if i == 0 else self._other_mesh)
            if pts is not None:
                faces.append(pts)
            elif i == 0 and not due:  # lost the track: look again on this very frame
                self._roi = None
                return self._detect(rgb)
        if faces:
            self._roi = self._roi_of(faces[0])
        else:
            self._roi = None
        return faces

    def _find_faces(self, rgb: np.ndarray) -> list[tuple[float, float, float]]:
        h, w = rgb.shape[:2]
        result = self._detector.process(rgb)
        boxes = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            bw, bh = b.width * w, b.height * h
            boxes.append((b.xmin * w + bw / 2, b.ymin * h + bh / 2, self.roi_scale * max(bw, bh)))
        boxes = sorted(boxes, key=lambda r: -r[2])
        if boxes:  # a small face in the background (a poster, a passer-by) is not a second speaker
            boxes = [b for b in boxes if b[2] >= self.min_face_share * boxes[0][2]]
        return boxes[: self.max_faces + 1]

    def _roi_of(self, pts: np.ndarray) -> tuple[float, float, float]:
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        centre = (lo + hi) / 2
        return float(centre[0]), float(centre[1]), float(self.roi_scale * 0.8 * (hi - lo).max())

    def _mesh_in(self, rgb: np.ndarray, roi: tuple[float, float, float], mesh) -> np.ndarray | None:
        h, w = rgb.shape[:2]
        cx, cy, side = roi
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        result = mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        cw, ch = x1 - x0, y1 - y0
        pts = landmark_array(result.multi_face_landmarks[0])
        return (pts * np.array([cw, ch, cw], np.float32) + np.array([x0, y0, 0], np.float32)).astype(np.float32)

    def reset(self) -> None:
        """Forget the track (at a scene cut)."""
        self._roi = None

    def close(self) -> None:
        if self._mesh is None:
            return
        for model in (self._mesh, self._other_mesh, self._detector):
            model.close()  # graph teardown warns too: still filtered
        self._mesh = self._other_mesh = self._detector = None
        self._roi = None
        native_noise.release()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
