"""What `factory eval` measures: items of (generated clip, reference clip, audio the generated
lips should follow), from two folders matched by name, or from a manifest's pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from factory.eval.settings import EvalConfig

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg"} | VIDEO_EXTENSIONS


@dataclass
class EvalItem:
    name: str
    generated: np.ndarray  # (T, H, W, 3) uint8, frame-aligned with reference
    reference: np.ndarray
    audio: np.ndarray | None  # int16 mono at eval.sample_rate: what the generated lips follow
    notes: list[str] = field(default_factory=list)
    _landmarks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def landmarks(self, side: str) -> np.ndarray:
        """(T, 478, 2) MediaPipe landmarks of `generated` or `reference` (NaN where no face),
        tracked once per side and shared by every metric that needs them."""
        if side not in self._landmarks:
            from factory.faces.landmarks import NUM_LANDMARKS, FaceLandmarker

            frames = getattr(self, side)
            out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan)
            with FaceLandmarker() as lm:
                for i, frame in enumerate(frames):
                    faces = lm.detect(frame)
                    if faces:
                        out[i] = faces[0][:, :2]
            self._landmarks[side] = out
        return self._landmarks[side]


def read_video(path: Path, fps: int) -> np.ndarray:
    from factory.media.video import iter_frames

    frames = [frame for _, frame in iter_frames(path, fps=fps)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def read_audio(path: Path, sample_rate: int) -> np.ndarray | None:
    from factory.media.audio import load_audio
    from factory.media.video import MediaError

    try:
        return load_audio(path, sample_rate)
    except MediaError:
        return None


def matched(generated: np.ndarray, reference: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The two clips cut to a common length, the generated one resized to the reference's size."""
    n = min(len(generated), len(reference))
    if len(generated) != len(reference):
        notes.append(f"lengths differ ({len(generated)} vs {len(reference)} frames): first {n} compared")
    generated, reference = generated[:n], reference[:n]
    if generated.shape[1:3] != reference.shape[1:3]:
        h, w = reference.shape[1:3]
        notes.append(f"generated resized from {generated.shape[2]}x{generated.shape[1]} to {w}x{h}")
        generated = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in generated])
    return generated, reference


def _by_stem(folder: Path, extensions: set[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in extensions}


def folder_items(cfg: EvalConfig, unmatched: list[str]) -> Iterator[EvalItem]:
    generated = _by_stem(Path(cfg.generated), VIDEO_EXTENSIONS)
    references = _by_stem(Path(cfg.reference), VIDEO_EXTENSIONS)
    audio_files = None
    if cfg.audio not in ("reference", "generated"):
        audio_files = _by_stem(Path(cfg.audio), AUDIO_EXTENSIONS)
    unmatched += [f"{p.name}: no reference of that name" for s, p in generated.items() if s not in references]
    names = sorted(s for s in generated if s in references)
    for name in names[: cfg.max_items]:
        notes: list[str] = []
        gen, ref = matched(read_video(generated[name], cfg.fps), read_video(references[name], cfg.fps), notes)
        source = {"reference": references.get(name), "generated": generated[name]}.get(cfg.audio)
        if audio_files is not None:
            source = audio_files.get(name)
        audio = read_audio(source, cfg.sample_rate) if source is not None else None
        if audio is None:
            notes.append(f"no audio ({cfg.audio}): sync not measured")
        yield EvalItem(name, gen, ref, audio, notes)


def manifest_path(target: str) -> Path:
    p = Path(target)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"no manifest at {p}")
    return p


def manifest_items(cfg: EvalConfig) -> Iterator[EvalItem]:
    """A manifest's pairs: V_syn as generated, V_real as reference, alt.wav (the audio V_syn was
    re-dubbed from) as the audio its lips should follow."""
    from manifests.reader import iter_pairs

    for i, sample in enumerate(iter_pairs(manifest_path(cfg.manifest))):
        if cfg.max_items is not None and i >= cfg.max_items:
            return
        notes: list[str] = []
        gen, ref = matched(sample["syn"], sample["real"], notes)
        audio = sample.get("alt_audio")
        if audio is None:
            notes.append("sample has no alt.wav: sync not measured")
        yield EvalItem(sample["key"], gen, ref, audio, notes)


def eval_items(cfg: EvalConfig, unmatched: list[str]) -> Iterator[EvalItem]:
    return manifest_items(cfg) if cfg.manifest is not None else folder_items(cfg, unmatched)
