"""SAM 2 video propagation of occluder boxes given on some frames, frames fed from memory.

Mirrors sam2 1.1.0: `SAM2VideoPredictor.init_state` only reads frames through
`sam2.sam2_video_predictor.load_video_frames` (a JPEG folder or an mp4). We swap that one loader
for the in-memory frames while init_state runs, so the inference state itself stays sam2's own.
The replacement returns what the loader returns: (T, 3, image_size, image_size) float32 images
resized to a square and normalised with ImageNet mean/std, and the original height and width.

Valid `image_size`: a multiple of 32. Hiera's windowed positional embedding tiles an 8x8 window
over the stride-4 features (image_size / 4 must divide by 8), and the FPN adds the stride-32
level, upsampled, onto the stride-16 one. The RoPE memory attention recomputes its frequencies
for any feature size, so sizes other than 1024 need no change to the config beyond the override.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from factory.devices import pick_device

_IMG_MEAN = (0.485, 0.456, 0.406)  # sam2.utils.misc.load_video_frames defaults
_IMG_STD = (0.229, 0.224, 0.225)
_LOADER_LOCK = threading.Lock()  # the loader swap is module-global: one init_state at a time


class OcclusionTracker:
    def __init__(self, config_name: str = "configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint: str | None = None,
                 image_size: int = 512, device: str | None = None, allow_random_weights: bool = False):
        if (checkpoint is None or not Path(checkpoint).is_file()) and not allow_random_weights:
            raise FileNotFoundError(
                f"SAM 2 checkpoint not found: {checkpoint!r}; set occlusion.sam2_checkpoint to a local "
                "file (e.g. sam2.1_hiera_tiny.pt matching occlusion.sam2_config)")
        if image_size % 32:
            raise ValueError(f"occlusion.image_size must be a multiple of 32 for SAM 2's Hiera, got {image_size}")
        from sam2.build_sam import build_sam2_video_predictor

        self.device = torch.device(device or pick_device())
        self.image_size = image_size
        self.predictor = build_sam2_video_predictor(
            config_name, ckpt_path=checkpoint if checkpoint and Path(checkpoint).is_file() else None,
            device=self.device, hydra_overrides_extra=[f"++model.image_size={image_size}"])
        if self.device.type != "cuda":
            self.predictor.memory_attention.register_forward_pre_hook(_memory_to_float32, with_kwargs=True)

    def track(self, frames: np.ndarray, boxes: list[tuple[int, int, int, int]], frame_index: int) -> np.ndarray:
        """(T, H, W) bool: the union of every box's object mask, propagated from `frame_index` both ways.

        `frames` are (T, H, W, 3) uint8 RGB; boxes are (x1, y1, x2, y2) pixels on frame `frame_index`.
        """
        return self.track_prompts(frames, {frame_index: boxes})

    def track_prompts(self, frames: np.ndarray, prompts: dict[int, list[tuple[int, int, int, int]]]) -> np.ndarray:
        """Like `track`, with boxes on several frames, each box its own object: the union."""
        objects = [{frame: box} for frame, boxes in prompts.items() for box in boxes]
        return self.track_objects(frames, objects).any(axis=0)

    def track_objects(self, frames: np.ndarray, objects: list[dict[int, tuple[int, int, int, int]]]) -> np.ndarray:
        """(O, T, H, W) bool, one mask track per object. An object is {frame: box}: one SAM 2 object
        id prompted on each of its frames, so boxes of one occluder on several probes make one track.
        Propagation runs forward from the first prompted frame and backward from the last, so every
        prompt conditions both passes."""
        num_frames, height, width = frames.shape[:3]
        masks = np.zeros((len(objects), num_frames, height, width), bool)
        prompts = [{f: b for f, b in ((f, _clip_box(b, width, height)) for f, b in obj.items()) if b is not None}
                   for obj in objects]
        live = [o for o, boxes in enumerate(prompts) if boxes]  # an object boxed off the frame has no mask
        if not live:  # nothing occludes the face: no model run at all
            return masks
        frames_prompted = sorted({f for o in live for f in prompts[o]})
        with torch.inference_mode(), self._autocast():
            state = self._init_state(frames)
            for o in live:
                for frame_index, box in sorted(prompts[o].items()):
                    self.predictor.add_new_points_or_box(state, frame_idx=frame_index, obj_id=o,
                                                         box=np.asarray(box, np.float32))
            for reverse, start in ((False, frames_prompted[0]), (True, frames_prompted[-1])):
                for idx, obj_ids, logits in self.predictor.propagate_in_video(
                        state, start_frame_idx=start, reverse=reverse):
                    hits = (logits[:, 0] > 0.0).cpu().numpy()
                    for row, obj_id in enumerate(obj_ids):
                        masks[obj_id, idx] |= hits[row]
        return masks

    def _autocast(self):
        if self.device.type == "cuda":  # bf16 as in sam2's own video demo; CPU autocast is slower here
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _init_state(self, frames: np.ndarray) -> dict:
        images = _normalised_images(frames, self.image_size, self.device)
        height, width = frames.shape[1:3]

        def load_from_memory(**_: object) -> tuple[torch.Tensor, int, int]:
            return images, height, width

        with _LOADER_LOCK, mock.patch("sam2.sam2_video_predictor.load_video_frames", load_from_memory):
            return self.predictor.init_state(video_path="<in-memory>")


def _memory_to_float32(module, args, kwargs):
    """SAM 2 keeps memory features in bf16 to save GPU memory and relies on CUDA autocast to mix
    them with fp32 weights; without autocast (CPU), memories from several prompted frames stay
    all-bf16 and attention fails. Cast them back."""
    for name in ("memory", "memory_pos"):
        if isinstance(kwargs.get(name), torch.Tensor):
            kwargs[name] = kwargs[name].float()
    return args, kwargs


def _normalised_images(frames: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(_IMG_MEAN, device=device)[:, None, None]
    std = torch.tensor(_IMG_STD, device=device)[:, None, None]
    return (x - mean) / std


def _clip_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box inside the frame, or None when nothing of it is (a VLM may box past the edge)."""
    x1, x2 = sorted((min(max(int(box[0]), 0), width), min(max(int(box[2]), 0), width)))
    y1, y2 = sorted((min(max(int(box[1]), 0), height), min(max(int(box[3]), 0), height)))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
