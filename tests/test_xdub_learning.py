"""`xdub-stage2` learns (slow, seeded, CPU): phase 1 of the CPU demo recipe
(configs/dubber_xdub_cpu.yaml) on the demo pair manifest (tests/flashlips_corpus.py: six demo
videos, transplant pairs, four train videos and two held out) edits the held-out synthetic
videos' lips closer to the real ones than the synthetic input itself (X-Dub's "return the input
unchanged" baseline), and the lips follow the audio: another held-out clip's audio moves them
more than re-sampling the noise does.

As for Stage I (tests/test_dit_learning.py), the recipe's VAE is random, so the verdict is read in
its latent space (the lip cells, real or synthetic lips), where the editor works.

What it took (measured on this corpus, 16 held-out segments, see the config's comments): the
Stage I CPU recipe's settings (log-mel audio, lambda_lip 10, segment stride 4, audio CFG 2 and
shift 5 at sampling), and time: at 1000 steps the editor is 0.223 vs the synthetic 0.241 but copies
the synthetic lips (another clip's audio moves them 0.050, other noise 0.105); at 3000 steps 0.181,
audio 0.081 vs noise 0.051; at 4000 0.177, audio 0.085 vs noise 0.044. Starting from a trained Stage I generator did not help at this size:
its audio pathway (audio 0.233 vs noise 0.123 at step 0) was lost within 250 steps while the
editor learned to copy the reference (0.221 vs 0.203 after 1000 steps)."""

from __future__ import annotations

import json

import pytest
import torch

CONFIG = "configs/dubber_xdub_cpu.yaml"
STEPS = 4000


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """23 transplant pairs of six demo videos at 96 px (about a minute: `factory pairs`)."""
    from factory.demo import SENTENCES
    from tests.flashlips_corpus import pair_manifest

    return pair_manifest(tmp_path_factory.mktemp("xdub_pairs"), SENTENCES[:6], 96, "filters.identity.enabled=false")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~8 min on 2 idle cores at 1 thread, pairs included
def test_phase_one_edits_heldout_lips_toward_the_real_ones_following_the_audio(pairs, tmp_path):
    from factory.trainers.dubbers import train_dubber

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core box two threads per step are slower, not faster
    try:
        metrics = train_dubber(CONFIG, [f"manifests=[{pairs}]", f"loop.out={tmp_path / 'run'}", f"loop.steps={STEPS}",
                                        f"loop.eval_every={STEPS}", "loop.progress=false"])
    finally:
        torch.set_num_threads(threads)
    start, end = metrics["evals"][0], metrics["last_eval"]
    assert start["step"] == 0 and end["step"] == STEPS
    print(json.dumps({"start": start, "end": end}, indent=1))
    # measured (1 thread), lip cells of 16 held-out segments: it learned, 1.25 -> 0.177,
    assert end["latent_l1_editor"] < 0.3 * start["latent_l1_editor"]
    # closer to the real lips than the synthetic input (0.241),
    assert end["latent_l1_editor"] < 0.85 * end["latent_l1_synthetic"]
    # and another held-out clip's audio moves the lips more (0.085) than re-sampling the noise does (0.044)
    assert end["latent_change_audio"] > end["latent_change_noise"]
    # (driven by the other clip's audio the lips land about as far from the real ones, 0.1775 vs 0.1765: too thin
    # a margin to assert across CPUs, so recorded here and in metrics.json only)
    for key in ("sync_c_editor", "csim_editor", "psnr_editor"):  # the measurement metrics ride along
        assert key in end, sorted(end)
    assert (tmp_path / "run" / "final" / "editor").is_dir()
