"""The trained dubbers' folders through `factory dub`: an `xdub-stage2` run (and a `flashlips-refine`
lip_flow run) trained for a couple of steps on the session's demo pairs at 32 px, then used on the
demo talking video with new audio. What `factory dub` promises for any dubber (tests/test_dub.py's
check_dubbed: the video's frames, rate and size, the new audio alone, the picture outside the face
as it was up to the codec) holds, and the dubber's own contract: seeded, the previous segment's
shown crops continue the lips (motion frames), the LoRA experts work in their flow-time ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factory.cli import main
from factory.dubbing import load_dubber
from factory.trainers.dubbers import train_dubber
from tests.test_dub import check_dubbed, media, one_thread, original  # noqa: F401 (fixtures)
from tests.test_xdub_recipe import CONFIG as XDUB_CONFIG, tiny as xdub_tiny


def corners_zero(alpha: np.ndarray) -> bool:
    s = alpha.shape[1] // 8
    return all(not alpha[:, y:y + s, x:x + s].any() for y in (0, -s) for x in (0, -s))


# 1. xdub-stage2 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xdub_folder(finished_run, tmp_path_factory):
    """Phase 1 (2 steps) then phase 2 (2 steps: the lip expert, a large learning rate so it moved
    visibly): a folder with the base editor and one expert; the sampler settings 4 steps, shift 3."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("xdub_dubber")
    train_dubber(XDUB_CONFIG, xdub_tiny(finished_run, root / "p1", "phase=1", "eval.steps=4", "eval.shift=3.0"))
    train_dubber(XDUB_CONFIG, xdub_tiny(finished_run, root / "p2", "phase=2", f"init_from={root / 'p1' / 'final'}",
                                        "eval.steps=4", "eval.shift=3.0", "loop.lr=0.05"))
    return root / "p2" / "final"


def test_an_xdub_folder_dubs_a_video_through_factory_dub(xdub_folder, media, original, tmp_path):
    out = tmp_path / "dubbed.mp4"
    assert main(["dub", str(media["video"]), str(media["short"]), "--checkpoint", str(xdub_folder),
                 "--segment-frames", "50", "-o", str(out), "-q"]) == 0
    measured = check_dubbed(out, media, original, media["short_pcm"])
    assert measured["mouth_change"].min() > 5  # a 4-step-trained editor: every frame's mouth re-rendered


def test_the_xdub_dubber_is_seeded_bridged_and_routes_its_experts(xdub_folder, original):
    dubber = load_dubber(xdub_folder)
    assert (dubber.name, dubber.crop_size, dubber.motion_frames) == ("xdub-stage2", 256, 1)
    assert json.loads((xdub_folder / "config.json").read_text())["experts"] == ["lip"]
    dubber.setup("cpu")
    frames, points = original["frames"][:12], np.stack(original["points"][:12]).astype(np.float32)
    audio = np.random.default_rng(0).integers(-8000, 8000, 12 * 640).astype(np.int16)
    first = dubber.dub_segment(frames, points, audio, None, seed=3)
    assert first.frames.shape == frames.shape and first.frames.dtype == np.uint8
    assert first.alpha.shape == frames.shape[:3] and first.alpha.max() == 255 and corners_zero(first.alpha)
    assert np.array_equal(dubber.dub_segment(frames, points, audio, None, seed=3).frames, first.frames)
    assert not np.array_equal(dubber.dub_segment(frames, points, audio, None, seed=4).frames, first.frames)
    # the previous segment's shown crops start the next one: other motion, other lips
    motion = original["frames"][20:21]
    bridged = dubber.dub_segment(frames, points, audio, motion, seed=3)
    assert not np.array_equal(bridged.frames, first.frames)
    # the lip expert runs for t in [0.4, 0.8] (the 4-step, shift-3 sampler has two steps there);
    # moved out of reach, the base editor alone renders something else
    dubber.settings["expert_ranges"] = {"lip": [2.0, 3.0], "texture": [2.0, 3.0]}
    assert not np.array_equal(dubber.dub_segment(frames, points, audio, None, seed=3).frames, first.frames)


def test_an_xdub_folder_cannot_run_without_its_weights(media, tmp_path, capsys):
    out = tmp_path / "dubbed.mp4"
    assert main(["dub", str(media["video"]), str(media["short"]), "--generator", "xdub-stage2",
                 "-o", str(out), "-q"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


# 2. flashlips-refine ----------------------------------------------------------------------------

FLASHLIPS_CONFIG = "configs/dubber_flashlips_cpu.yaml"


@pytest.fixture(scope="module")
def flashlips_folder(finished_run, tmp_path_factory):
    """The editor stage (2 steps, fresh tiny editor), then the lip_flow stage from its final folder
    (2 steps): the dubber folder; the lip-pose sampler at its config's 8 steps."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("flashlips_dubber")
    common = [f"manifests=[{finished_run}]", "loop.steps=2", "loop.eval_every=0", "loop.progress=false",
              "pose_stats_segments=4"]
    train_dubber(FLASHLIPS_CONFIG, [*common, "stage=editor", f"loop.out={root / 'editor'}"])
    train_dubber(FLASHLIPS_CONFIG, [*common, "stage=lip_flow", f"init_from={root / 'editor' / 'final'}",
                                    f"loop.out={root / 'flow'}"])
    return root


def test_a_flashlips_folder_dubs_a_video_through_factory_dub(flashlips_folder, media, original, tmp_path):
    out = tmp_path / "dubbed.mp4"
    # 50-frame segments: longer than the lip-pose model's 32 frames, drawn in two pieces each
    assert main(["dub", str(media["video"]), str(media["short"]), "--checkpoint",
                 str(flashlips_folder / "flow" / "final"), "--segment-frames", "50", "-o", str(out), "-q"]) == 0
    measured = check_dubbed(out, media, original, media["short_pcm"])
    assert measured["mouth_change"].min() > 5  # a 2-step editor redraws every frame's mouth


def test_the_flashlips_dubber_is_seeded_and_its_editor_folder_is_a_generator(flashlips_folder, original):
    dubber = load_dubber(flashlips_folder / "flow" / "final")
    assert (dubber.name, dubber.crop_size, dubber.motion_frames) == ("flashlips-refine", 256, 0)
    dubber.setup("cpu")
    frames, points = original["frames"][:6], np.stack(original["points"][:6]).astype(np.float32)
    audio = np.random.default_rng(0).integers(-8000, 8000, 6 * 640).astype(np.int16)
    first = dubber.dub_segment(frames, points, audio, None, seed=3)
    assert first.frames.shape == frames.shape and first.frames.dtype == np.uint8
    assert first.alpha.shape == frames.shape[:3] and first.alpha.max() == 255 and corners_zero(first.alpha)
    assert np.array_equal(dubber.dub_segment(frames, points, audio, None, seed=3).frames, first.frames)
    # another segment's seed: other noise for the lip-pose sampler, other lips
    assert not np.array_equal(dubber.dub_segment(frames, points, audio, None, seed=4).frames, first.frames)
    # the editor stage's folder is a latent_editor generator: factory dub runs it mask-based
    assert load_dubber(flashlips_folder / "editor" / "final").name == "latent_editor"
