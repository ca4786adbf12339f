"""Ingest: one video in, aligned fixed-length face clips out (or a recorded reason why not).

Per frame, streaming: decode at 25 fps -> scene-cut check -> MediaPipe landmarks (tracking) ->
zero-phase smoothed similarity alignment to the template -> crop. A clip is emitted as soon as it is
full, so memory never holds more than one clip of crops whatever the video's length. Decoding,
landmarks, cropping and audio each run on their own thread: the landmark model is the bottleneck
and everything else hides behind it.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from factory.clip_store import ClipStore
from factory.clips import Clip, save_clip
from factory import storage
from factory.faults import fault_point
from factory.faces.continuity import identity_consistency, landmark_jump, mean_identity
from factory.faces.identity_worker import IdentityWorker
from factory.faces.landmarks import INNER_LIP_GAP, FaceLandmarker
from factory.media.audio import DecodedAudio, decode_audio
from factory.media.cuts import CutDetector
from factory.metrics.frames import evenly_spaced
from factory.media.vad import SpeechDetector
from factory.media.video import MediaError, iter_frames, probe
from factory.priority import lower_this_threads_priority
from factory.records import Record
from factory.stages.assemble import Background, ClipAssembler
from factory.stage import Resources, Stage


@dataclass
class IngestConfig:
    fps: int = 25
    sample_rate: int = 16000
    crop_size: int = 256
    clip_frames: int = 77
    clip_stride: int = 77  # frames between clip starts; < clip_frames overlaps clips
    max_clips_per_video: int | None = None
    min_resolution: int = 64  # shorter side in pixels
    max_faces: int = 1  # frames with more faces than this are not used
    background_face_share: float = 0.6  # faces under this share of the main face's size are background: ignored
    scene_cut_threshold: float = 27.0  # PySceneDetect content score (hue, saturation, luminance change; 0-255)
    min_luma: float = 12.0  # frames darker than this (mean, 0-255) are fades: not used
    max_face_shift: float = 0.5  # eye distances the face may move in one frame before the clip ends
    max_face_scale: float = 1.25  # size change in one frame before the clip ends
    identity_frames: int = 2  # frames per clip (first, last) whose face embeddings must agree (dlib), 0 = no check
    min_identity_csim: float = 0.92  # lowest agreement: the same person ~0.95+, two people <= ~0.89
    landmark_smoothing_sigma: float = 1.5  # frames; zero-phase Gaussian over the track (0 = none)
    vad_threshold: float = 0.5
    min_speech_ratio: float = 0.2  # share of a clip's audio that must be speech
    syncnet_path: str | None = None  # SyncNet weights (folder or syncnet_v2.model): sync gate on; null: off
    sync_max_offset: int = 15  # frames searched either way for the audio-video offset
    correct_offset: bool = True  # shift each clip's audio by the offset found (LatentSync: essential)
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


@dataclass
class FrameUse:
    """What tracking learnt about each frame a clip did not take: frames it could not use (no face,
    several faces, too dark) and where a face track was broken (a scene cut, a face jump)."""
    read: int = 0  # frames decoded (a video stopped at max_clips_per_video is not read to its end)
    unusable: dict[int, str] = field(default_factory=dict)  # frame -> no_face | multiple_faces | dark_frame
    breaks: set[int] = field(default_factory=set)  # frames that start a new track
    stopped: bool = False  # ingest.max_clips_per_video was reached

    def unused_ranges(self, clip_ranges: list[list[int]], total: int = 0) -> list[list]:
        """[start, end, reason] (end exclusive) for every run of frames that no clip covers. A usable
        frame is unused because its face track (between cuts, jumps and faceless frames) was shorter
        than a clip, or was what was left of the track after its last clip, or because the video's
        clip budget was spent; a rejected clip still covers its frames (its row says why)."""
        used = np.zeros(self.read, bool)
        for start, end in clip_ranges:
            used[start:end] = True
        last_end = max(end for _, end in clip_ranges) if clip_ranges else 0
        reasons: list[str | None] = [None] * self.read
        track_start = 0
        for k in range(self.read + 1):  # tracks: runs of usable frames, split at breaks
            if k == self.read or k in self.unusable or k in self.breaks:
                track = range(track_start, k)
                covered = [j for j in track if used[j]]
                for j in track:
                    if used[j]:
                        continue
                    if self.stopped and j >= last_end:
                        reasons[j] = "max_clips_per_video"
                    elif not covered:
                        reasons[j] = "face_track_shorter_than_clip"
                    else:
                        reasons[j] = "track_remainder_shorter_than_clip" if j > covered[-1] else "between_clips"
                track_start = k if k not in self.unusable else k + 1
            if k < self.read and k in self.unusable and not used[k]:
                reasons[k] = self.unusable[k]
        if self.stopped and total > self.read:
            reasons += ["max_clips_per_video"] * (total - self.read)  # never decoded
        ranges: list[list] = []
        for k, reason in enumerate(reasons):
            if reason is None:
                continue
            if ranges and ranges[-1][1] == k and ranges[-1][2] == reason:
                ranges[-1][1] = k + 1
            else:
                ranges.append([k, k + 1, reason])
        return ranges


class IngestStage(Stage):
    name = "ingest"

    def __init__(self, cfg: IngestConfig, store: ClipStore):
        super().__init__(Resources(num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus,
                                   pool_size=cfg.resources.pool_size, batch_size=1))  # one video a call
        self.cfg = cfg
        self.store = store  # local or a URL: workers write their clips there directly
        self._last_face: Future | None = None

    def setup(self) -> None:
        self.vad = SpeechDetector(self.cfg.vad_threshold, self.cfg.sample_rate)
        self.identity = IdentityWorker() if self.cfg.identity_frames > 0 else None
        self.syncnet = None
        if self.cfg.syncnet_path is not None:
            from factory.models.syncnet_s import load_syncnet

            self.syncnet = load_syncnet(self.cfg.syncnet_path, key="ingest.syncnet_path")

    def teardown(self) -> None:
        if self.identity is not None:
            self.identity.close()

    def process(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        for video in records:
            out.extend(self.ingest_video(video))
        return out

    # -- one video -----------------------------------------------------------------------------

    def ingest_video(self, video: Record) -> list[Record]:
        if self.store.is_done(video.key):  # ingested by an earlier (killed) run: reuse its clips
            return self.store.video_records(video.key)
        try:
            records = self._ingest(video)
        except MediaError as exc:
            video.meta["reject_detail"] = exc.detail
            records = [video.reject(exc.reason, self.name)]
        self.store.record_video(video.key, records)
        fault_point("ingest_done", video.key)
        return records

    def _ingest(self, video: Record) -> list[Record]:
        cfg = self.cfg
        path = video.meta["source"]
        info = probe(path)
        if min(info.width, info.height) < cfg.min_resolution:
            raise MediaError("resolution_too_small", f"{info.width}x{info.height} < {cfg.min_resolution}")
        if not info.has_audio:
            raise MediaError("no_audio_stream")
        video.meta.update(width=info.width, height=info.height, source_fps=round(info.fps, 3),
                          variable_frame_rate=info.variable_frame_rate)
        with ThreadPoolExecutor(1) as pool:  # audio, VAD and hashing overlap with the video work
            side = pool.submit(self._audio_and_hash, path)
            clips: list[Record] = []
            self._last_face = None  # the embedding of the last kept clip's last frame

            def on_clip(start: int, arrays) -> bool:
                audio, speech, sha = side.result()  # raises silent_audio etc. at the first clip
                video.meta["source_sha256"] = sha
                clips.append(self._emit(video, len(clips), start, arrays, audio, speech))
                fault_point("ingest_clip", video.key)
                return not (cfg.max_clips_per_video and len(clips) >= cfg.max_clips_per_video)

            frame_issues = self._track(path, on_clip)
            audio, speech, sha = side.result()
        video.meta.update(source_sha256=sha, frame_issues=dict(frame_issues))
        if not clips:
            raise MediaError(self._why_no_clip(frame_issues), json.dumps(dict(frame_issues)))
        self._frame_use.stopped = bool(cfg.max_clips_per_video and len(clips) >= cfg.max_clips_per_video)
        total = round(info.duration * cfg.fps) if info.duration else 0
        # on the video's first clip (the table turns them into rows): which frames no clip used, and why
        clips[0].meta["video_unused_frames"] = self._frame_use.unused_ranges(
            [c.meta["frame_range"] for c in clips], total)
        return [self.check_identity(clip) for clip in clips]

    def check_identity(self, clip: Record) -> Record:
        """A clip whose frames show different faces is rejected; the others get their face's
        embedding, from which the pair-making pipeline groups speakers as people."""
        if clip.rejected or clip.media is None:
            return clip
        embeddings, clip.media = np.concatenate([face.result() for face in clip.media]), None
        clip.meta["identity_csim"] = round(identity_consistency(embeddings), 4)
        if clip.meta["identity_csim"] < self.cfg.min_identity_csim:
            storage.remove(clip.meta.pop("clip_path"))  # never paired: not kept in the store
            clip.meta["reject_detail"] = (f"first and last frames' faces agree {clip.meta['identity_csim']} "
                                          f"< ingest.min_identity_csim {self.cfg.min_identity_csim}")
            return clip.reject("face_changed_in_clip", self.name)
        clip.meta["identity"] = mean_identity(embeddings)
        return clip

    def _audio_and_hash(self, path: str) -> tuple[DecodedAudio, np.ndarray, str]:
        lower_this_threads_priority()  # needed only at the first clip: tracking goes first
        audio = decode_audio(path, self.cfg.sample_rate)  # undecodable packets: bad intervals, judged per clip
        speech = self.vad.speech_mask(audio.samples)
        if speech.mean() < 0.02:
            raise MediaError("silent_audio", f"speech in {speech.mean():.1%} of the audio")
        return audio, speech, storage.digest(path, "sha256")  # streamed, also from a URL

    def _embed_faces(self, frames: np.ndarray, previous_last: Future | None) -> list[Future]:
        """Embeddings of the clip's checked frames (first, ..., last), one future each. A clip that
        continues the previous one's track starts on the frame after that clip's last: that
        embedding (40 ms earlier, same track) stands in for its first, saving one of two dlib runs."""
        indices = evenly_spaced(len(frames), self.cfg.identity_frames)
        faces = [previous_last if i == 0 and previous_last is not None else self.identity.submit(frames[i:i + 1])
                 for i in indices]
        self._last_face = faces[-1] if indices[-1] == len(frames) - 1 else None
        return faces

    def _sync(self, meta: dict, frames: np.ndarray, clip_audio: np.ndarray, samples: np.ndarray, a0: int) -> np.ndarray:
        """The sync gate's numbers (judged by filters/sync.py, so refilter can re-threshold) and,
        with `correct_offset`, the clip's audio re-cut from the source so the offset is undone."""
        from factory.metrics.sync import sync_scores

        cfg = self.cfg
        scores = sync_scores(self.syncnet, frames, clip_audio, cfg.sample_rate, cfg.fps, cfg.sync_max_offset)
        meta.update(sync_conf=round(scores.confidence, 3), av_offset=scores.offset, sync_dist=round(scores.min_dist, 3))
        if not cfg.correct_offset or scores.offset == 0:
            return clip_audio
        start = a0 - scores.offset * (cfg.sample_rate // cfg.fps)  # frame i sounds at audio frame i - offset
        shifted = np.zeros_like(clip_audio)
        lo, hi = max(start, 0), min(start + len(clip_audio), len(samples))
        if hi > lo:
            shifted[lo - start:hi - start] = samples[lo:hi]
        meta["av_offset_corrected"] = scores.offset
        return shifted

    def _why_no_clip(self, issues: Counter) -> str:
        frames = issues.pop("frames", 0)
        if frames < self.cfg.clip_frames:
            return "too_short"
        faceless = {k: v for k, v in issues.items() if k in ("no_face", "multiple_faces")}
        if faceless and max(faceless.values()) > frames / 2:
            return max(faceless, key=faceless.get)
        return "no_continuous_face_segment"

    def _track(self, path: str, on_clip) -> Counter:
        """Landmarks and shot checks on this thread (frames shrunk for the cut detector on the decode
        thread); alignment, crops and clip assembly on a third. A cut, a dark frame or a jump of
        the face ends the current clip. Returns per-reason counts of frames that were not used."""
        cfg = self.cfg
        issues: Counter = Counter()
        self._frame_use = use = FrameUse()
        assembler = ClipAssembler(cfg.crop_size, cfg.clip_frames, cfg.clip_stride, cfg.landmark_smoothing_sigma,
                                  on_clip)
        crops = Background(lambda k, rgb, pts: assembler.add(k, rgb, pts) if pts is not None
                           else assembler.break_track(), background=True)
        cuts = CutDetector(cfg.scene_cut_threshold, cfg.min_luma, cfg.fps)
        previous = None  # the last frame's face, for the jump check
        landmarker = FaceLandmarker(static=False, max_faces=cfg.max_faces, min_face_share=cfg.background_face_share)
        try:
            for k, rgb, shot in iter_frames(path, cfg.fps, prepare=cuts.next_frame, background=True):  # cuts: decode thread
                if assembler.stopped:
                    break
                issues["frames"] += 1
                use.read = k + 1
                if shot:
                    issues[shot] += 1
                    crops.put(k, None, None)
                    landmarker.reset()
                    previous = None
                    use.breaks.add(k)
                    if shot == "dark_frame":
                        use.unusable[k] = shot
                        continue
                faces = landmarker.detect(rgb)
                if not faces or len(faces) > cfg.max_faces:
                    issues["no_face" if not faces else "multiple_faces"] += 1
                    use.unusable[k] = "no_face" if not faces else "multiple_faces"
                    crops.put(k, None, None)
                    previous = None
                    continue
                points = faces[0][:, :2]  # the largest face
                if previous is not None and landmark_jump(previous, points, cfg.max_face_shift, cfg.max_face_scale):
                    issues["face_jump"] += 1  # another face, or a cut the detector missed: start afresh
                    use.breaks.add(k)
                    crops.put(k, None, None)
                previous = points
                crops.put(k, rgb, points)
            crops.put(-1, None, None)  # end of video: the assembler crops the frames it held back
        finally:
            landmarker.close()
            crops.close()
        return issues

    def _emit(self, video: Record, index: int, start: int, arrays, audio, speech) -> Record:
        cfg = self.cfg
        frames, landmarks, transforms, outside = arrays.crops, arrays.landmarks, arrays.transforms, arrays.outside
        per_frame = cfg.sample_rate // cfg.fps
        a0, a1 = start * per_frame, (start + cfg.clip_frames) * per_frame
        clip_audio = np.zeros(a1 - a0, np.int16)
        piece = audio.samples[a0:a1]
        clip_audio[: len(piece)] = piece
        speech_ratio = float(speech[a0:a1].mean()) if a0 < len(speech) else 0.0
        heard = np.zeros(a1 - a0, bool)
        heard[: len(speech[a0:a1])] = speech[a0:a1]
        # per frame: speech in at least half its audio (trainers weight or skip silent frames)
        speech_frames = (heard.reshape(cfg.clip_frames, per_frame).mean(axis=1) >= 0.5).astype(int).tolist()
        key = f"{video.key}_c{index:04d}"
        gap = landmarks[:, INNER_LIP_GAP[1]] - landmarks[:, INNER_LIP_GAP[0]]
        meta = {
            "source": video.meta["source"],
            "source_sha256": video.meta["source_sha256"],
            "video_key": video.key,
            "speaker": video.meta["speaker"],
            "frame_range": [start, start + cfg.clip_frames],
            "fps": cfg.fps,
            "sample_rate": cfg.sample_rate,
            "speech_ratio": round(speech_ratio, 4),
            "speech": speech_frames,
            "mouth_open": np.round(np.linalg.norm(gap, axis=1), 2).tolist(),
            "outside_frame": np.round(outside, 3).tolist(),  # per frame: crop share beyond the frame
        }
        record = Record(key=key, kind="clip", meta=meta)
        last_face, self._last_face = self._last_face, None  # only a clip that is kept passes its face on
        if not audio.is_clean(a0, a1):
            meta["reject_detail"] = "an audio packet inside the clip could not be decoded"
            return record.reject("audio_decode_error", self.name)
        if len(piece) < (a1 - a0) * 0.9:
            meta["reject_detail"] = f"audio covers {len(piece) / (a1 - a0):.0%} of the clip (< 90%)"
            return record.reject("audio_shorter_than_video", self.name)
        if speech_ratio < cfg.min_speech_ratio:
            meta["reject_detail"] = f"speech in {speech_ratio:.0%} of the clip < ingest.min_speech_ratio {cfg.min_speech_ratio}"
            return record.reject("no_speech", self.name)
        if self.identity is not None:  # one person throughout, and who (judged in check_identity)
            record.media = self._embed_faces(frames, last_face if arrays.follows_previous else None)
        if self.syncnet is not None:
            clip_audio = self._sync(meta, frames, clip_audio, audio.samples, a0)
        path = self.store.clip_path(key)
        save_clip(path, Clip(frames, landmarks, transforms, clip_audio))
        meta["clip_path"] = str(path)
        return record
