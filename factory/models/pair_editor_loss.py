"""FlashLips self-refinement: the latent editor fine-tuned mask-free on (real, synthetic) pairs.

A pair batch (factory/trainers/pair_data.py) holds a real segment (`target`) and the generator's
version of it (`synthetic`), identical but for the lips. Each pair trains the editor twice, in
both directions, stacked on the batch axis (`both_directions`):

    src -> mod   input real       lips from the synthetic frame   output the synthetic frame
    mod -> src   input synthetic  lips from the real frame        output the real frame

Mask-free: the editor sees the whole input frame, z_in = E(input) (Stage 1 zeroed the lower
face), and returns z_hat = z_in + residual; the lip pose is read by the lip-pose encoder from the
driving frame (the output side), as in Stage 1 reconstruction. The losses are Stage 1's
(factory/models/editor_losses.py, FlashLips' weights 0.1/0.1/10/100/50), on the output frame:

    latent_l1          |z_hat - E(output)| over the whole latent
    masked_latent_l1   the same inside the face region at latent resolution
    lower_face_l1      |D(z_hat) - output| inside the face region
    mouth_l1           |D(z_hat) - output| inside the mouth region (frames with a visible mouth)
    perceptual         VGG features of the whole decoded frame vs the output frame (when weights are given)

The regions are the same in both directions: the face region is the real lower-face mask joined
with where the pair differs (`alpha`), the mouth region both sides' lip masks joined, since the
mouth must move from one shape to the other wherever either side has lips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from factory.models.editor_losses import EditorLoss, frames_of, latent_mask, masked_l1, mouth_pixel_l1
from factory.models.latent_editor import LatentEditor, decode_latents, encode_frames
from factory.models.lip_pose import LipPoseEncoder

DIRECTIONS = ("src_to_mod", "mod_to_src")


# 1. both directions -----------------------------------------------------------------------------

def pair_regions(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(face region, mouth region), each (B, 1, T, S, S) in {0, 1}, the same for both directions."""
    face = torch.maximum(batch["face_mask"], (batch["alpha"] > 0).to(batch["face_mask"].dtype))
    mouth = torch.maximum(batch["lip_mask"], batch["syn_lip_mask"])
    return face, mouth


def both_directions(batch: dict) -> dict[str, torch.Tensor]:
    """The pair batch as 2B editing examples: the first B real -> synthetic (src -> mod), the last B
    synthetic -> real (mod -> src). Keys: input, output, driver_landmarks (the output side's mouth
    landmarks), references, face, mouth; videos (2B, C, T, S, S), landmarks (2B, T, K, 2)."""
    real, syn = batch["target"], batch["synthetic"]
    face, mouth = pair_regions(batch)
    return {
        "input": torch.cat([real, syn]),
        "output": torch.cat([syn, real]),
        "driver_landmarks": torch.cat([batch["syn_mouth_landmarks"], batch["mouth_landmarks"]]),
        "references": torch.cat([batch["references"], batch["references"]]),
        "face": torch.cat([face, face]),
        "mouth": torch.cat([mouth, mouth]),
    }


# 2. the loss ------------------------------------------------------------------------------------

def edit_latents(examples: dict, vae, editor: LatentEditor, lip_encoder: LipPoseEncoder,
                 scaling_factor: float | None = None) -> dict[str, torch.Tensor]:
    """Run the editor mask-free on `both_directions`-style examples (on the editor's device):
    frames (N, 3, S, S) of input and output, z_out = E(output) and z_hat, N = examples * T."""
    device = next(editor.parameters()).device
    b, _, t = examples["input"].shape[:3]
    x_in = frames_of(examples["input"].to(device))
    x_out = frames_of(examples["output"].to(device))
    refs = examples["references"].to(device)
    with torch.no_grad():  # the VAE's encoder is frozen: no graph
        z_in = encode_frames(vae, x_in, scaling_factor)
        z_out = encode_frames(vae, x_out, scaling_factor)
        z_ref = encode_frames(vae, frames_of(refs), scaling_factor).unflatten(0, (b, refs.shape[2]))
    lips = lip_encoder(examples["driver_landmarks"].to(device).flatten(0, 1), x_out)
    z_hat = editor(z_in, z_ref, lips, frames_per_reference_set=t).float()
    return {"x_in": x_in, "x_out": x_out, "z_out": z_out.float(), "z_hat": z_hat}


class PairEditorLoss(EditorLoss):
    """`loss(batch, vae, editor, lip_encoder) -> (total, {component: detached value})` over both
    directions of a pair batch. Settings, weights and the VGG network are EditorLoss's."""

    def forward(self, batch: dict, vae, editor: LatentEditor,
                lip_encoder: LipPoseEncoder) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        examples = both_directions(batch)
        run = edit_latents(examples, vae, editor, lip_encoder, cfg.scaling_factor)
        z_hat, z_out, x = run["z_hat"], run["z_out"], run["x_out"]
        face = frames_of(examples["face"].to(x.device))
        mouth = frames_of(examples["mouth"].to(x.device))
        parts = {
            "latent_l1": F.l1_loss(z_hat, z_out),
            "masked_latent_l1": masked_l1(z_hat, z_out, latent_mask(face, z_hat.shape[-2:])),
        }
        pick = self._decoded(len(x))
        x_hat = decode_latents(vae, z_hat[pick], cfg.scaling_factor).float()
        x, face, mouth = x[pick], face[pick], mouth[pick]
        parts["lower_face_l1"] = masked_l1(x_hat, x, face)
        parts["mouth_l1"] = mouth_pixel_l1(x_hat, x, mouth, cfg.mouth_min_area)[0]
        if self.vgg is not None:
            self.vgg.to(x.device)
            parts["perceptual"] = self.vgg(x_hat, x)  # mask-free: the whole frame is the output
        total = sum(getattr(cfg, name) * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}
