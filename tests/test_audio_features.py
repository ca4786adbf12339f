"""Audio features (factory/models/audio_features.py): Whisper encoder states cut into one window
per video frame, centred on that frame's two 50 Hz steps; a tiny random encoder runs the real path."""

from __future__ import annotations

import pytest
import torch

from factory.config import ConfigError
from factory.models.audio_features import AudioFeatureConfig, AudioFeatures, frame_windows


@pytest.fixture(scope="module")
def encoder():
    return AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu"))


def test_a_feature_impulse_lands_at_the_centre_of_its_frames_window():
    steps, frames, window = 50, 25, 16
    for k in (3, 12, 20):
        for step in (2 * k, 2 * k + 1):  # both 50 Hz steps of video frame k
            feats = torch.zeros(1, steps, 3)
            feats[0, step, 1] = 1.0
            win = frame_windows(feats, frames, window)[0, :, :, 1]
            assert win.shape == (frames, window)
            centre = (window - 1) // 2 + (step - 2 * k)  # positions 7 and 8 of 16
            assert win[k, centre] == 1.0 and win[k].sum() == 1.0
            # frame j sees it 2 (j - k) positions earlier, and not at all once outside its window
            for j in range(frames):
                pos = centre - 2 * (j - k)
                assert win[j].sum() == (1.0 if 0 <= pos < window else 0.0), (k, step, j)
                if 0 <= pos < window:
                    assert win[j, pos] == 1.0


def test_windows_past_the_audio_repeat_the_edge_frames():
    feats = torch.arange(10, dtype=torch.float32).view(1, 10, 1)  # 5 video frames
    win = frame_windows(feats, 5, 6)[0, :, :, 0]
    assert win[0].tolist() == [0, 0, 0, 1, 2, 3]  # frame 0: steps -2..3, clamped to 0
    assert win[4].tolist() == [6, 7, 8, 9, 9, 9]  # frame 4: steps 6..11, clamped to 9
    odd = frame_windows(feats, 5, 5)[0, :, :, 0]
    assert odd[2].tolist() == [2, 3, 4, 5, 6]  # odd window: step 2i in the middle


def test_the_encoder_gives_per_frame_windows_of_its_width(encoder):
    torch.manual_seed(0)
    audio = (torch.randn(3, 25 * 640) * 0.2).clamp(-1, 1)
    feats = encoder(audio)
    assert feats.shape == (3, 25, 16, encoder.dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    states = encoder.encoder_states(audio)
    assert states.shape == (3, 50, encoder.dim)
    assert torch.equal(feats[:, 10, 7], states[:, 20]) and torch.equal(feats[:, 10, 8], states[:, 21])
    # batched = one by one; different audio gives different features
    assert torch.allclose(encoder(audio[1:2])[0], feats[1], atol=1e-5)
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)


def test_audio_longer_than_a_chunk_is_encoded_in_chunks(encoder):
    audio = (torch.randn(1, 3 * encoder.chunk_samples + 640 * 5) * 0.2).clamp(-1, 1)
    states = encoder.encoder_states(audio)
    assert states.shape == (1, audio.shape[1] // 320, encoder.dim)
    first = encoder.encoder_states(audio[:, :encoder.chunk_samples])
    assert torch.allclose(states[:, :encoder.chunk_steps], first, atol=1e-5)


def test_the_tiny_encoder_is_reproducible_from_its_seed(encoder):
    again = AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu"))
    audio = torch.linspace(-0.5, 0.5, 640 * 5)[None]
    assert torch.equal(encoder(audio), again(audio))


def test_a_saved_whisper_folder_loads_and_a_missing_one_names_the_key(encoder, tmp_path):
    from transformers import WhisperConfig, WhisperModel

    model = WhisperModel(WhisperConfig(**{k: v for k, v in encoder.encoder.config.to_dict().items()
                                          if k in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                                                   "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
                                                   "num_mel_bins", "max_source_positions")}))
    model.encoder.load_state_dict(encoder.encoder.state_dict())
    model.save_pretrained(tmp_path / "whisper")
    encoder.extractor.save_pretrained(tmp_path / "whisper")
    loaded = AudioFeatures(AudioFeatureConfig(path=str(tmp_path / "whisper"), device="cpu"))
    audio = torch.linspace(-0.5, 0.5, 640 * 5)[None]
    assert torch.allclose(loaded(audio), encoder(audio), atol=1e-6)
    with pytest.raises(ConfigError, match=r"'audio_features\.path'"):
        AudioFeatures(AudioFeatureConfig(path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match=r"'audio_features\.path' is not set"):
        AudioFeatures(AudioFeatureConfig())
    with pytest.raises(ConfigError, match=r"'gen\.audio\.path'"):
        AudioFeatures(AudioFeatureConfig(path=str(tmp_path)), key="gen.audio")


def test_the_settings_load_from_yaml_data_with_a_tiny_config():
    from factory.config import build

    cfg = build(AudioFeatureConfig, {"tiny": {"d_model": 32, "max_source_positions": 50}, "window": 4, "device": "cpu"})
    features = AudioFeatures(cfg)(torch.zeros(2, 640 * 3))
    assert features.shape == (2, 3, 4, 32)
    with pytest.raises(ConfigError, match=r"multiple of 50"):
        AudioFeatures(AudioFeatureConfig(tiny={"max_source_positions": 60}))


# kind mel: Whisper's log-mel frames as the features (no encoder, no weights) --------------------

def test_mel_features_are_the_extractors_log_mel_frames_in_pairs_per_step():
    mel = AudioFeatures(AudioFeatureConfig(kind="mel", mel_bins=40, window=4, device="cpu"))
    assert mel.encoder is None and mel.dim == 80
    torch.manual_seed(0)
    audio = (torch.randn(2, 25 * 640) * 0.2).clamp(-1, 1)
    states = mel.encoder_states(audio)
    assert states.shape == (2, 50, 80)
    frames = mel.extractor(list(audio[:, :mel.chunk_samples].numpy()), sampling_rate=16000,
                           return_tensors="pt").input_features  # (2, 40, 100 Hz frames)
    assert torch.allclose(states[0, 7, :40], frames[0, :, 14]) and torch.allclose(states[0, 7, 40:], frames[0, :, 15])
    feats = mel(audio)
    assert feats.shape == (2, 25, 4, 80) and torch.equal(feats[:, 10, 1], states[:, 20])


def test_mel_features_follow_the_loudness_frame_by_frame():
    """What the demo's mouths follow (factory/demo.py opens the jaw by the loudness): a louder
    frame has more mel energy, the silent one the least."""
    mel = AudioFeatures(AudioFeatureConfig(kind="mel", window=2, device="cpu"))
    torch.manual_seed(0)
    gains = torch.tensor([0.0, 0.02, 0.1, 0.5, 0.05])
    audio = (torch.randn(1, 5 * 640) * gains.repeat_interleave(640)).clamp(-1, 1)
    energy = mel(audio)[0].mean(dim=(1, 2))  # (5,) one per video frame
    assert torch.argsort(energy).tolist() == torch.argsort(gains).tolist()


def test_a_mel_extractor_folder_loads_and_a_bad_kind_names_the_key(tmp_path):
    mel = AudioFeatures(AudioFeatureConfig(kind="mel", mel_bins=40, window=2, device="cpu"))
    mel.extractor.save_pretrained(tmp_path / "audio")
    loaded = AudioFeatures(AudioFeatureConfig(kind="mel", path=str(tmp_path / "audio"), window=2, device="cpu"))
    audio = torch.linspace(-0.5, 0.5, 640 * 5)[None]
    assert loaded.dim == 80 and torch.equal(loaded(audio), mel(audio))
    with pytest.raises(ConfigError, match=r"'gen\.audio\.path'.*preprocessor_config"):
        AudioFeatures(AudioFeatureConfig(kind="mel", path=str(tmp_path)), key="gen.audio")
    with pytest.raises(ConfigError, match=r"'gen\.audio\.kind'"):
        AudioFeatures(AudioFeatureConfig(kind="wav2vec"), key="gen.audio")
