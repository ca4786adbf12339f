"""Augmentations: the same transform on both sides, reproducible from the recorded parameters."""

import numpy as np
import pytest

from augment import occlusion, relight
from augment.stage import AugmentStage
from augment.stage import AugmentConfig
from factory.payload import PairMedia
from factory.records import Record


def frames(seed, n=6, size=64):
    return np.random.default_rng(seed).integers(30, 200, (n, size, size, 3), dtype=np.uint8)


def pair(key, seed=0):
    real = frames(seed)
    syn = real.copy()
    syn[:, 40:56, 20:44] = frames(seed + 1)[:, 40:56, 20:44]  # differs only in the "mouth"
    return Record(key, "pair", media=PairMedia(real_frames=real, syn_frames=syn), meta={})


@pytest.mark.parametrize("kind", ["occlusion", "relight"])
def test_both_sides_get_exactly_the_same_transform(kind):
    stage = AugmentStage(AugmentConfig(share=1.0, occlusion=kind == "occlusion", relight=kind == "relight"), seed=3)
    rec = pair("k1")
    real0, syn0 = rec.media.real_frames.copy(), rec.media.syn_frames.copy()
    out = stage([rec])[0]
    assert out.meta["augment"]["kind"] == kind
    real, syn = out.media.real_frames, out.media.syn_frames
    assert not np.array_equal(real, real0)
    same = np.ones(real.shape[1:3], bool)
    same[40:56, 20:44] = False  # where the inputs agree, the outputs agree: the pair stays aligned
    assert np.array_equal(real[:, same], syn[:, same])
    # the recorded parameters reproduce both sides exactly
    module = occlusion if kind == "occlusion" else relight
    params_cls = occlusion.OcclusionParams if kind == "occlusion" else relight.RelightParams
    params = params_cls(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in out.meta["augment"]["params"].items()})
    redo = module.apply(real0, params)
    redo = redo[0] if kind == "occlusion" else redo
    assert np.array_equal(redo, real)
    redo_syn = module.apply(syn0, params)
    assert np.array_equal(redo_syn[0] if kind == "occlusion" else redo_syn, syn)


def test_static_relight_inverts():
    p = relight.RelightParams("static", (0.9, 0.8, 0.95), (1, 0), (0, 1), 0.3, (1, 1, 1))
    x = frames(5)
    assert np.abs(relight.invert(relight.apply(x, p), p).astype(int) - x).max() <= 1


def test_dynamic_light_moves_over_time():
    p = relight.RelightParams("dynamic", (1, 1, 1), (1, 0), (-1, 0), 0.5, (1, 1, 1))
    g = relight.gains(p, 5, 32)
    assert g[0, 16, 28, 0] > g[0, 16, 4, 0] and g[-1, 16, 28, 0] < g[-1, 16, 4, 0]


def test_occluder_moves_and_is_recorded_mask():
    p = occlusion.sample_params(np.random.default_rng(0))
    _, masks = occlusion.apply(frames(1, n=10, size=96), p)
    assert masks.max() > 200 and not np.array_equal(masks[0], masks[-1])


def test_share_and_determinism():
    stage = AugmentStage(AugmentConfig(share=0.3), seed=0)
    picked = [k for k in (f"key{i}" for i in range(400)) if stage.rng_for(k).random() < 0.3]
    assert 80 < len(picked) < 160
    again = AugmentStage(AugmentConfig(share=0.3), seed=0)
    a, b = stage([pair("key7")])[0], again([pair("key7")])[0]
    assert a.meta.get("augment") == b.meta.get("augment")
    assert np.array_equal(a.media.real_frames, b.media.real_frames)
