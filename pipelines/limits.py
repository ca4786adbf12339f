"""The allowed range of every value of the factory's config (`factory run|ingest|pairs|refilter`),
checked by `load_factory_config` before any work. A new numeric key needs a line here
(tests/test_config_limits.py fails otherwise). A plug-in filter's keys have no line: its own
code checks them.
"""

from __future__ import annotations

from typing import Any

from factory.config import ConfigError
from factory.validation import Rule, above, at_least, between, check_values, one_of, optional

COUNT = at_least(1, integer=True)  # sizes, rates, frame counts: 0 or less makes nothing, or hangs
CSIM = between(-1, 1)  # cosine similarities
SHARE = between(0, 1)
SILERO_RATES = Rule("8000 or a multiple of 16000 (what silero-vad reads)",
                    lambda v: isinstance(v, int) and v > 0 and (v == 8000 or v % 16000 == 0))

RULES: dict[str, Rule] = {
    "seed": at_least(0, integer=True),  # numpy seeds are non-negative
    "executor.kind": one_of("ray", "local"),
    "executor.num_cpus": optional(COUNT, " (detect)"),
    "executor.num_gpus": optional(at_least(0, integer=True), " (detect)"),
    "executor.gpu_wait_s": at_least(0),
    "executor.max_retries": at_least(0, integer=True),
    "ingest.fps": COUNT,
    "ingest.sample_rate": SILERO_RATES,
    "ingest.crop_size": at_least(16, integer=True),
    "ingest.clip_frames": COUNT,
    "ingest.clip_stride": COUNT,
    "ingest.max_clips_per_video": optional(COUNT, " (no cap)"),
    "ingest.min_resolution": at_least(1, integer=True),
    "ingest.max_faces": COUNT,
    "ingest.background_face_share": SHARE,
    "ingest.scene_cut_threshold": between(0, 255),
    "ingest.min_luma": between(0, 255),
    "ingest.max_face_shift": above(0),
    "ingest.max_face_scale": at_least(1),
    "ingest.identity_frames": at_least(0, integer=True),
    "ingest.min_identity_csim": CSIM,
    "ingest.landmark_smoothing_sigma": at_least(0),
    "ingest.vad_threshold": SHARE,
    "ingest.min_speech_ratio": SHARE,
    "ingest.sync_max_offset": COUNT,
    "pair.min_mouth_difference": at_least(0),
    "pair.max_reuse": optional(COUNT, " (unbounded)"),
    "pair.heldout_share": SHARE,
    "pair.speakers": one_of("video", "all", "file"),
    "pair.speaker_csim": CSIM,
    "occlusion.image_size": Rule("a multiple of 32, at least 32 (SAM 2's Hiera)",
                                 lambda v: isinstance(v, int) and v >= 32 and v % 32 == 0),
    "occlusion.probe_every": COUNT,
    "occlusion.match_iou": SHARE,
    "occlusion.max_crop_share": SHARE,
    "occlusion.max_face_share": at_least(0),  # a hand may be larger than the face hull it covers
    "occlusion.oversize": one_of("reject", "discard"),
    "generate.feather_sigma": at_least(0),
    "generate.mask_dilation": at_least(0, integer=True),
    "filters.real_clip.min_face_px": optional(at_least(0), " (off)"),
    "filters.real_clip.min_sharpness": optional(at_least(0), " (off)"),
    "filters.real_clip.max_abs_yaw": optional(between(0, 180), " (off)"),
    "filters.real_clip.max_abs_pitch": optional(between(0, 90), " (off)"),
    "filters.alt_identity.min_alt_csim": CSIM,
    "filters.sync.min_sync_conf": optional(at_least(0), " (off)"),
    "filters.sync.max_abs_offset": optional(at_least(0, integer=True), " (off)"),
    "filters.mouth_distance.min_lmd": at_least(0),
    "filters.identity.backend": one_of("dlib", "arcface"),
    "filters.identity.min_csim": optional(CSIM, " (the backend's default)"),
    "filters.identity.frames": COUNT,
    "filters.vlm_quality.min_mean": between(1, 5),  # the mean of six 1-5 scores
    "filters.vlm_quality.runs": COUNT,
    "filters.vlm_quality.run_length": COUNT,
    "filters.vlm_quality.crop_margin": between(0, 1),
    "filters.vlm_quality.max_pixels": COUNT,
    "filters.vlm_quality.max_new_tokens": COUNT,
    "augment.share": SHARE,
    "write.shard_maxcount": COUNT,
    "write.shard_maxsize": COUNT,
    "write.video_crf": between(0, 51, integer=True),  # H.264's range
    "write.previews": at_least(0, integer=True),
    # every component's `resources` section
    "*resources.num_cpus": at_least(0),
    "*resources.num_gpus": at_least(0),
    "*resources.batch_size": COUNT,
    "*resources.pool_size": COUNT,
}


def check_limits(values: dict[str, Any]) -> None:
    """Raises ConfigError naming the first key outside its range (values: the config as a dict)."""
    check_values(values, RULES)
    ingest = values.get("ingest", {})
    if ingest.get("sample_rate", 0) % ingest.get("fps", 1):  # whole audio samples per frame, or A/V drifts
        raise ConfigError(f"config key 'ingest.sample_rate' must be a multiple of ingest.fps "
                          f"({ingest['fps']}), got {ingest['sample_rate']} (e.g. fps 25 or 50 with 16000, fps 30 with 48000)")
