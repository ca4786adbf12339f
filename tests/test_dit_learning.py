"""The `dit_inpainter` learns (slow, seeded, CPU): a short run of the CPU demo recipe
(configs/generator_dit_cpu.yaml) on a demo clip store reconstructs the masked mouth of clips from
videos it never saw better than the masked input and a reference frame's mouth pasted in, and its
lips follow the audio: another clip's audio moves the mouth more than re-sampling the noise does,
and away from the real mouth.

The recipe's VAE is random (no weights on CPU), and a random decoder blurs every pixel it touches,
so the verdict is read in the VAE's latent space (the lip cells), where the DiT works:
latent_l1_dit vs latent_l1_masked (the mouth left grey, encoded) and latent_l1_reference (a
reference frame's lower face pasted, encoded). The pixel numbers are recorded in metrics.json
beside the VAE's own floor (mouth_l1_vae).

What it took (measured on this corpus, see configs/generator_dit_cpu.yaml): the demo's jaw opens
by the speech's loudness (factory/demo.py), and its static landmarks gave a face mask that left
the dropped chin visible, so the background told the opening (face_mask_grow); log-mel features
carry the loudness (a ridge probe, train videos -> held-out video: R^2 0.88-0.93 vs 0.53-0.82 for
the tiny random Whisper's states); the lips weighed up (lambda_lip 10); X-Dub's shift 5; more
distinct segments (segment_stride 4, six videos); and audio CFG at sampling, as X-Dub samples.
Audio swap vs noise (guidance 1, 1000 steps): Whisper 0.006 vs 0.089, mel 0.014 vs 0.085, grown mask
0.020 vs 0.110, lambda_lip 10 0.033 vs 0.107, shift 5 0.039 vs 0.079; 1500 steps 0.046 vs 0.072;
guidance 2: 0.092 vs 0.075."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CPU_RECIPE = str(ROOT / "configs" / "generator_dit_cpu.yaml")
STEPS = 1500


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Six demo videos (12-14 s each), 77-frame clips at 64 px with the photo's landmarks: four
    train videos, two held out."""
    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store_with_landmarks

    return demo_clip_store_with_landmarks(tmp_path_factory.mktemp("dit_learning"), sentences=SENTENCES[:6], crop=64)


@pytest.mark.slow
def test_a_short_cpu_training_inpaints_heldout_mouths_that_follow_the_audio(store, tmp_path):
    from factory.trainers.generators import train_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core box two threads per step are slower, not faster
    try:
        metrics = train_generator(CPU_RECIPE, [f"clip_stores=[{store.path}]", f"loop.out={tmp_path / 'run'}",
                                               f"loop.steps={STEPS}", f"loop.eval_every={STEPS}", "loop.progress=false"])
    finally:
        torch.set_num_threads(threads)
    start, end = metrics["evals"][0], metrics["last_eval"]
    assert start["step"] == 0 and end["step"] == STEPS
    print(json.dumps({"start": start, "end": end}, indent=1))
    # measured (1 thread; 8 min on the loaded 2-core box, store included), lip cells of 8 held-out segments:
    # it learned: 1.21 -> 0.174,
    assert end["latent_l1_dit"] < 0.3 * start["latent_l1_dit"]
    # closer to the real mouths than a reference frame's mouth pasted in (0.273) and the masked input (0.624),
    assert end["latent_l1_dit"] < 0.85 * end["latent_l1_reference"]
    assert end["latent_l1_dit"] < 0.5 * end["latent_l1_masked"]
    # another held-out clip's audio moves the lips more (0.092) than re-sampling the noise does (0.075)
    assert end["latent_change_audio"] > end["latent_change_noise"]
    # (rendered with the other clip's audio the mouth lands slightly farther from the real one, 0.178 vs
    # 0.174: too thin a margin to assert across CPUs, so recorded here and in metrics.json only)
    assert (tmp_path / "run" / "final" / "config.json").is_file()
