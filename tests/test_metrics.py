"""factory/metrics: the pure functions filters and eval share."""

import subprocess
import sys

import numpy as np
import pytest

from factory.faces.align import apply, template
from factory.faces.landmarks import MOUTH
from factory.metrics.csim import csim
from factory.metrics.frames import evenly_spaced
from factory.metrics.lmd import LMD_SCALE, mouth_distance


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def lips_moved(track: np.ndarray, dy: float) -> np.ndarray:
    out = track.copy()
    out[:, MOUTH, 1] += dy
    return out


# -- frames ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, k", [(77, 8), (25, 3), (10, 10), (9, 2), (100, 7)])
def test_evenly_spaced_covers_the_clip_sorted_and_unique(n, k):
    idx = evenly_spaced(n, k)
    assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) == k
    assert np.all(np.diff(idx) > 0) and idx.dtype.kind == "i"
    gaps = np.diff(idx)
    assert gaps.max() - gaps.min() <= 1  # evenly: gaps differ by rounding only


def test_evenly_spaced_with_more_wanted_than_there_are_gives_every_frame():
    assert evenly_spaced(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(1, 8).tolist() == [0]


def test_evenly_spaced_of_nothing_is_empty():
    assert evenly_spaced(0, 8).size == 0 and evenly_spaced(10, 0).size == 0


# -- CSIM --------------------------------------------------------------------------------------

def test_csim_of_identical_unit_vectors_is_one():
    emb = np.random.default_rng(0).standard_normal((8, 512))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert csim(emb, emb) == pytest.approx(1.0)
    assert csim(emb, -emb) == pytest.approx(-1.0)


def test_csim_is_the_mean_of_row_wise_cosines():
    real = np.array([[1.0, 0.0], [1.0, 0.0]])
    syn = np.array([[1.0, 0.0], [0.0, 1.0]])  # same, then orthogonal
    assert csim(real, syn) == pytest.approx(0.5)


# -- LMD ---------------------------------------------------------------------------------------

def test_lmd_is_zero_for_identical_tracks():
    t = np.stack([template(256)] * 3)
    assert mouth_distance(t, t) == 0.0


def test_lmd_ignores_a_similarity_transform_of_one_track():
    """Head motion (scale, rotation, shift) is not lip motion."""
    t = template(256)
    a = lips_moved(t[None], 2.0)[0]
    moved = apply(similarity(1.7, 0.3, 40.0, -12.0), a)
    assert mouth_distance(a[None], moved[None]) < 1e-6
    assert mouth_distance(t[None], moved[None]) == pytest.approx(mouth_distance(t[None], a[None]), abs=1e-6)


def test_lmd_grows_with_lip_displacement_in_canonical_pixels():
    t = template(LMD_SCALE)[None]
    lmds = [mouth_distance(t, lips_moved(t, dy)) for dy in (0.5, 1.0, 2.0, 4.0)]
    assert lmds == pytest.approx([0.5, 1.0, 2.0, 4.0], abs=1e-6)
    assert lmds == sorted(lmds)


# -- purity ------------------------------------------------------------------------------------

def test_metrics_import_no_filter_stage_executor_pipeline_or_cli():
    code = ("import sys, factory.metrics.frames, factory.metrics.csim, factory.metrics.lmd\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('filters', 'pipelines', 'ray') or m in "
            "('factory.stage', 'factory.cli', 'factory.run', 'factory.executors', 'factory.stages')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
