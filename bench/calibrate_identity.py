"""Calibrate the identity (CSIM) threshold of an embedding backend on real faces.

X-Dub's reasoning: the reference point is how similar one speaker is to *themselves* across
different segments (other pose, light, expression). A pseudo pair re-renders only the lips of
one segment, so its CSIM must beat that reference; a pair below it has lost identity.

Three populations, all measured with the factory's own path (MediaPipe landmarks, alignment to
the canonical 256-px template, then the backend):
  same person, different photos   face_recognition's test photos (3 of one man) and the demo's
                                  astronaut at different moments of a demo run;
  different people                every cross-identity pair of those photos, insightface's
                                  sample group photo, Tom Hanks and the astronaut;
  pseudo pairs                    syn vs real of a finished run (the default: a fresh demo run).

Photos come from registry packages (PyPI sdists/wheels), nothing else is downloaded.
Usage: python bench/calibrate_identity.py [--run OUT] [--backend dlib|arcface --arcface-path X]
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.faces.align import frame_to_crop, warp_crop  # noqa: E402
from factory.faces.embedders import build_embedder  # noqa: E402
from factory.faces.landmarks import FaceLandmarker  # noqa: E402
from factory.metrics.csim import csim  # noqa: E402
from factory.metrics.frames import evenly_spaced  # noqa: E402
from manifests.reader import iter_pairs  # noqa: E402

CROP = 256


def registry_photos(cache: Path) -> dict[str, list[np.ndarray]]:
    """identity -> RGB photos, from face_recognition's sdist tests and insightface's wheel."""
    import insightface
    from skimage import data

    photos: dict[str, list[np.ndarray]] = {"astronaut": [data.astronaut()]}
    sdist = cache / "face_recognition-1.3.0.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache), "face_recognition==1.3.0"], check=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/tests/test_images/" in member.name and name.startswith(("obama", "biden")) and "partial" not in name:
                rgb = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
                photos.setdefault(re.sub(r"\d*\.jpg$", "", name), []).append(rgb[..., ::-1])
    images = Path(insightface.__file__).parent / "data" / "images"
    photos["tom_hanks"] = [cv2.imread(str(images / "Tom_Hanks_54745.png"))[..., ::-1]]
    photos["group_t1"] = [cv2.imread(str(images / "t1.jpg"))[..., ::-1]]
    return photos


def aligned_faces(rgb: np.ndarray, max_faces: int) -> list[np.ndarray]:
    with FaceLandmarker(static=True, max_faces=max_faces) as lm:
        faces = lm.detect(np.ascontiguousarray(rgb))
    return [warp_crop(rgb, frame_to_crop(f, CROP), CROP) for f in faces[:max_faces]]


def describe(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    return (f"{name:<34} n={len(v):<4} mean={v.mean():.4f}  min={v.min():.4f}  "
            f"p05={np.percentile(v, 5):.4f}  max={v.max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run's output folder (default: a fresh demo run)")
    parser.add_argument("--backend", default="dlib")
    parser.add_argument("--arcface-path")
    args = parser.parse_args()
    embedder = build_embedder(args.backend, args.arcface_path)
    cache = Path(tempfile.gettempdir()) / "factory-calibration"
    cache.mkdir(exist_ok=True)

    identities: dict[str, list[np.ndarray]] = {}  # identity -> embeddings of different photos
    for ident, photos in registry_photos(cache).items():
        for i, photo in enumerate(photos):
            crops = aligned_faces(photo, max_faces=8 if ident == "group_t1" else 1)
            for j, crop in enumerate(crops):
                key = f"{ident}_{j}" if ident == "group_t1" else ident
                identities.setdefault(key, []).append(embedder.embed(crop[None])[0])

    run = Path(args.run) if args.run else cache / "demo-run"
    if not args.run and not (run / "manifest.json").exists():
        subprocess.run([str(ROOT / ".venv" / "bin" / "factory"), "run", str(ROOT / "configs" / "demo.yaml"),
                        f"out={run}", "executor.kind=local", "augment.share=0", "-q"], check=True)
    pair_csim, real_by_speaker = [], {}
    for sample in iter_pairs(run / "manifest.json", augment=False):
        idx = evenly_spaced(len(sample["real"]), 8)
        real, syn = embedder.embed(sample["real"][idx]), embedder.embed(sample["syn"][idx])
        pair_csim.append(csim(real, syn))
        real_by_speaker.setdefault(sample["meta"]["speaker"], []).append(real)

    photos_same = [float(a @ b) for embs in identities.values() for a, b in itertools.combinations(embs, 2)]
    segments_same = [csim(a, b) for clips in real_by_speaker.values()
                     for a, b in itertools.combinations(clips, 2)]  # one speaker, different segments
    same = photos_same + segments_same
    different = [float(a[0] @ b[0]) for (ia, a), (ib, b) in itertools.combinations(identities.items(), 2)]

    print(f"backend {args.backend}; run {run}")
    print(describe("same person, different photos", photos_same))
    print(describe("same speaker, different segments", segments_same))
    print(describe("different people", different))
    print(describe("pseudo pairs (syn vs real)", pair_csim))
    print(f"reference (mean within-speaker): {np.mean(same):.4f}; pairs above it: "
          f"{np.mean(np.asarray(pair_csim) > np.mean(same)):.0%}")


if __name__ == "__main__":
    main()
