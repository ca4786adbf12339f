"""The pair payload: the typed arrays a pair record carries between stages, and the check that a
stage list can run (every field a stage requires is provided by a stage before it).

Two kinds of landmarks, never confused: `clip_landmarks` are ingest's (tracked on the source
video, mapped into the crop), `real_tracked` / `syn_tracked` are re-tracked on the output crops by
one detector (factory.stages.track), so the shards' landmarks mean the same whatever filters ran.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass
class PairMedia:
    real_frames: np.ndarray | None = None  # (T, S, S, 3) uint8 aligned crops of the real clip
    syn_frames: np.ndarray | None = None  # (T, S, S, 3) uint8, the re-dubbed clip
    real_audio: np.ndarray | None = None  # int16 mono: what the real lips say
    alt_audio: np.ndarray | None = None  # int16 mono: what the synthetic lips say
    clip_landmarks: np.ndarray | None = None  # (T, 478, 2) ingest's landmarks of the real clip, crop px
    transforms: np.ndarray | None = None  # (T, 2, 3) source frame -> crop
    mask: np.ndarray | None = None  # (S, S) uint8 {0,1}: the edit's support (alpha > 0 on some frame); outside it syn == real
    occlusion: np.ndarray | None = None  # (T, S, S) bool occluders kept real; None: none were looked for
    alpha: np.ndarray | None = None  # (T, S, S) uint8 0-255: the compositing alpha used per frame (occlusion included)
    motion_frames: np.ndarray | None = None  # (m, S, S, 3) uint8 real crops just before the clip (X-Dub's m = 5)
    speech: np.ndarray | None = None  # (T,) bool: frames whose audio is speech (VAD)
    real_tracked: np.ndarray | None = None  # (T, 478, 2) re-tracked on real_frames, NaN where lost
    syn_tracked: np.ndarray | None = None  # (T, 478, 2) re-tracked on syn_frames, NaN where lost
    files: dict[str, bytes] | None = None  # the WebDataset sample's members, after encoding
    preview: bytes | None = None  # JPEG: real | synthetic | difference


PAIR_FIELDS = frozenset(f.name for f in fields(PairMedia))


class ContractError(ValueError):
    """A stage list that cannot run: a stage needs a field no earlier stage provides."""


def check_contracts(stages: list[Any], available: frozenset[str] | set[str] = frozenset()) -> None:
    """Walk the stage list as the data will: each stage's `requires` must be in `available` or
    provided by an earlier stage. Raises before any work, naming the stage and the field."""
    have = set(available)
    for stage in stages:
        for name in (*stage.requires, *stage.provides):
            if name not in PAIR_FIELDS:
                raise ContractError(f"stage '{stage.name}' declares unknown pair field '{name}' "
                                    f"(known: {', '.join(sorted(PAIR_FIELDS))})")
        missing = [name for name in stage.requires if name not in have]
        if missing:
            raise ContractError(f"stage '{stage.name}' requires pair field '{missing[0]}', which no earlier "
                                f"stage provides (stages: {', '.join(s.name for s in stages)})")
        have.update(stage.provides)
