"""Builds factory/faces/template_478.npy, the canonical 2D face the factory aligns every frame to.

It is MediaPipe's 478 landmarks of scikit-image's `astronaut` photo (a real frontal face),
mirror-averaged to be left/right symmetric and placed in the unit square with the eye centres at
(0.38, 0.33) and (0.62, 0.33). Run once; the result is committed.

Framing: the chin of a closed mouth sits at ~0.74 of the crop height, so a jaw opened as wide as a
mouth opens (inner-lip gap 0.7 x the eye distance, ~45 mm against ~63 mm) stays above 0.9 and the
dilated lower-face mask stays in the crop (tests/test_crop_quality.py). The brows stay below 0.17.
"""

import numpy as np
from skimage import data

from factory.faces.landmarks import FaceLandmarker

LEFT_EYE = [33, 133, 160, 159, 158, 144, 145, 153]
RIGHT_EYE = [362, 263, 387, 386, 385, 373, 374, 380]
EYE_DISTANCE = 0.24  # eye centre to eye centre, in crop widths
EYE_HEIGHT = 0.33  # the eyes' height in the crop (0 = top)


def main() -> None:
    image = data.astronaut()
    with FaceLandmarker(static=True) as lm:
        faces = lm.detect(image)
    assert len(faces) == 1, "expected one face in the astronaut photo"
    pts = faces[0][:, :2].astype(np.float64)
    # Mirror-average: reflect, find each point's mirror partner by nearest neighbour, average.
    mirrored = pts.copy()
    mirrored[:, 0] = 2 * pts[:, 0].mean() - pts[:, 0]
    partner = np.argmin(((pts[:, None] - mirrored[None]) ** 2).sum(-1), axis=1)
    sym = (pts + np.stack([2 * pts[:, 0].mean() - pts[partner, 0], pts[partner, 1]], 1)) / 2
    le, re = sym[LEFT_EYE].mean(0), sym[RIGHT_EYE].mean(0)
    if le[0] > re[0]:
        le, re = re, le
    scale = EYE_DISTANCE / np.linalg.norm(re - le)
    angle = np.arctan2(re[1] - le[1], re[0] - le[0])
    rot = np.array([[np.cos(-angle), -np.sin(-angle)], [np.sin(-angle), np.cos(-angle)]])
    centred = (sym - (le + re) / 2) @ rot.T * scale + np.array([0.5, EYE_HEIGHT])
    np.save("factory/faces/template_478.npy", centred.astype(np.float32))
    print("template y-range", centred[:, 1].min(), centred[:, 1].max())


if __name__ == "__main__":
    main()
