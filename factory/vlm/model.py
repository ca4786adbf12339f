"""Qwen2.5-VL from a local folder, with one batched greedy `chat` over clips and prompts.

Frames go to qwen-vl-utils as PIL images (no temporary files); it resizes them (smart_resize: sides
multiples of 28, pixels within [MIN_PIXELS, max_pixels]) and the processor is told the same bounds,
so it does not resize again and `resized_hw` is exactly what the model saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.devices import pick_device

MIN_PIXELS = 4 * 28 * 28  # qwen-vl-utils' image floor; its video floor (128 tokens) trips on small clips
PATCH_FACTOR = 28  # patch 14 x spatial merge 2


class QwenVL:
    def __init__(self, path: str | None, config_key: str, device: str | None = None, max_pixels: int = 224 * 224):
        if not path or not Path(path).is_dir():
            raise FileNotFoundError(
                f"{config_key} is not set to an existing folder (got {path!r}): point it at a local "
                "Qwen2.5-VL folder (e.g. Qwen2.5-VL-7B-Instruct); nothing is downloaded")
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.device = device or pick_device()
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.min_pixels, self.max_pixels = MIN_PIXELS, max(max_pixels, MIN_PIXELS)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=dtype, local_files_only=True).to(self.device).eval()

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a frame of this size is resized to before the model sees it: the
        pixel space of Qwen2.5-VL's absolute grounding coordinates."""
        from qwen_vl_utils import smart_resize

        return smart_resize(height, width, factor=PATCH_FACTOR, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)

    def chat(self, clips: list[np.ndarray | list[np.ndarray]], prompts: list[str], max_new_tokens: int,
             logits_processor=None, fps: float | list[float] = 2.0) -> list[str]:
        """One greedy answer per (clip, prompt). A clip is (T, H, W, 3) uint8 RGB: T == 1 is shown
        as an image, T > 1 as a video of `fps` frames per second (one rate, or one per clip). A list
        of clips puts several images/videos, in order, before that prompt."""
        import torch
        from qwen_vl_utils import process_vision_info
        from transformers import LogitsProcessorList

        if len(clips) != len(prompts):
            raise ValueError(f"{len(clips)} clips but {len(prompts)} prompts")
        rates = [fps] * len(clips) if isinstance(fps, (int, float)) else list(fps)
        conversations = [[{"role": "user", "content": [*(self._vision(c, rate) for c in _as_list(clip)),
                                                        {"type": "text", "text": prompt}]}]
                         for clip, prompt, rate in zip(clips, prompts, rates)]
        texts = self.processor.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
        images, videos, video_kwargs = process_vision_info(conversations, return_video_kwargs=True,
                                                           return_video_metadata=True)
        video_kwargs.pop("fps", None)  # transformers rejects qwen-vl-utils' per-video list; metadata has it
        if videos:
            videos, metadata = map(list, zip(*videos))
            video_kwargs["video_metadata"] = metadata
        size = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
        inputs = self.processor(text=texts, images=images, videos=videos, padding=True, return_tensors="pt",
                                images_kwargs={"size": size}, videos_kwargs={"size": size, **video_kwargs})
        inputs = inputs.to(self.model.device)
        processors = LogitsProcessorList([logits_processor] if logits_processor is not None else [])
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      logits_processor=processors)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]  # left padding: every prompt ends at the same column
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def _vision(self, clip: np.ndarray, fps: float) -> dict:
        from PIL import Image

        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(f"a clip is (T, H, W, 3) uint8 RGB, got {clip.shape} {clip.dtype}")
        bounds = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        if len(clip) == 1:
            return {"type": "image", "image": Image.fromarray(clip[0]), **bounds}
        return {"type": "video", "video": [Image.fromarray(f) for f in clip], "sample_fps": fps, **bounds}


def _as_list(clip: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return list(clip) if isinstance(clip, (list, tuple)) else [clip]
