from factory.pairing import PairConfig
from factory.pairing import make_pairs
from factory.records import Record


def clip(key, video, mouth, speaker=None):
    return Record(key, "clip", meta={"speaker": speaker or video, "video_key": video, "mouth_open": mouth,
                                     "clip_path": f"/c/{key}.npz", "frame_range": [0, len(mouth)]})


def test_alternative_is_the_most_different_clip_of_the_same_video():
    clips = [clip("a0", "a", [0, 5, 0]), clip("a1", "a", [0, 5, 1]), clip("a2", "a", [9, 0, 9]),
             clip("b0", "b", [9, 0, 9])]
    pairs = {p.key: p for p in make_pairs(clips, PairConfig())}
    assert pairs["a0"].meta["alt_key"] == "a2" and pairs["a2"].meta["alt_key"] in ("a0", "a1")
    assert pairs["b0"].rejected == "no_alternative_clip"  # alone in its video
    assert pairs["a0"].meta["alt_clip_path"] == "/c/a2.npz"


def test_cross_video_pairs_within_a_speaker_only():
    clips = [clip("a0", "a", [0, 0], "s"), clip("b0", "b", [5, 5], "s"), clip("c0", "c", [9, 9], "t")]
    pairs = {p.key: p for p in make_pairs(clips, PairConfig(cross_video=True))}
    assert pairs["a0"].meta["alt_key"] == "b0" and pairs["c0"].rejected == "no_alternative_clip"


def test_pairs_do_not_depend_on_arrival_order():
    clips = [clip(f"a{i}", "a", [i, 2 * i % 5, i % 3]) for i in range(6)]
    one = [(p.key, p.meta["alt_key"]) for p in make_pairs(clips, PairConfig())]
    two = [(p.key, p.meta["alt_key"]) for p in make_pairs(clips[::-1], PairConfig())]
    assert one == two


def test_too_similar_alternative_is_rejected():
    clips = [clip("a0", "a", [1, 1]), clip("a1", "a", [1, 1.2])]
    pairs = make_pairs(clips, PairConfig(min_mouth_difference=0.5))
    assert {p.rejected for p in pairs} == {"alternative_too_similar"}


def test_a_pair_names_the_clip_just_before_it_for_motion_frames():
    clips = [clip("v_c0000", "v", [1, 2, 3]), clip("v_c0001", "v", [5, 1, 5]), clip("v_c0002", "v", [2, 2, 2])]
    clips[1].meta["frame_range"] = [3, 6]  # follows c0000 directly
    clips[2].meta["frame_range"] = [10, 13]  # after a gap: no motion frames
    pairs = {p.key: p for p in make_pairs(clips, PairConfig())}
    assert pairs["v_c0001"].meta["motion_clip_path"] == "/c/v_c0000.npz"
    assert "motion_clip_path" not in pairs["v_c0000"].meta and "motion_clip_path" not in pairs["v_c0002"].meta
