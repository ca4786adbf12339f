"""Reading MediaPipe's landmark protobufs into arrays: the fast wire path must equal the plain one."""

import mediapipe as mp
import numpy as np
from mediapipe.framework.formats import landmark_pb2
from skimage import data

from factory.faces.landmarks import landmark_array


def plain(landmarks) -> np.ndarray:
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], np.float32)


def test_wire_reading_equals_reading_each_landmark():
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        found = mesh.process(data.astronaut()).multi_face_landmarks[0]
    assert len(found.landmark) == 478
    np.testing.assert_array_equal(landmark_array(found), plain(found))


def test_landmarks_with_other_fields_are_still_read_right():
    listed = landmark_pb2.NormalizedLandmarkList()
    for i in range(5):
        point = listed.landmark.add(x=0.1 * i, y=0.5, z=-0.01 * i)
        if i == 2:
            point.visibility = 0.7  # an extra field: the records no longer have one fixed size
    listed.landmark.add(x=0.3, y=0.0)  # z left unset
    got = landmark_array(listed)
    np.testing.assert_array_equal(got, plain(listed))
    assert got.shape == (6, 3) and got[5, 2] == 0.0
