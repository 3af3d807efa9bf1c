"""SVD's denoising loop cut into steps, for `scheduling: step` (see `engines.video.step_loop`).

`StableVideoDiffusionPipeline.__call__` encodes the keyframe (CLIP image embedding and VAE latents), draws the
augmentation noise and the initial latents from the generator, then runs the UNet once per step over the
whole batch with one timestep. Here each scene does the first part alone, from its own generator in the
same order, so it draws the noise it would draw alone; each step stacks the active scenes' inputs, each
scaled by its own scheduler, into one UNet call with one timestep per row; each scene then applies its own
guidance ramp and scheduler step. Scenes with classifier-free guidance bring two rows (unconditional, then
conditional), scenes without it one, so both can share a call.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from engines.video.base import SceneFrames, to_uint8
from engines.video.step_loop import SceneState


@dataclass(eq=False, kw_only=True)
class SVDSceneState(SceneState):
    """A scene's SVD conditioning; every tensor has one row, or two (unconditional first) with guidance."""

    image_latents: torch.Tensor  # (rows, frames, C, h, w)
    image_embeddings: torch.Tensor  # (rows, 1, D)
    added_time_ids: torch.Tensor  # (rows, 3)
    guidance: torch.Tensor  # (1, frames, 1, 1, 1): the min-to-max ramp
    guided: bool


class SVDStepper:
    """`Stepper` over a loaded `PerVideoConditioningSVDPipeline`.

    Args:
        pipeline: the engine's pipeline (its modules are shared, its scheduler is copied per scene).
        dtype: the runtime dtype's name, for the non-finite output message.
    """

    def __init__(self, pipeline: Any, dtype: str) -> None:
        self.pipeline = pipeline
        self.dtype = dtype

    def start(self, item: Any) -> SVDSceneState:
        pipe = self.pipeline
        device = pipe._execution_device
        height, width, frames = item.param("height"), item.param("width"), item.param("num_frames")
        guided = item.param("max_guidance_scale") > 1
        generator = [torch.Generator(device=device).manual_seed(item.seed)]
        # 1. The keyframe: CLIP embedding, then noise-augmented VAE latents (the pipeline's order of draws)
        image_embeddings = pipe._encode_image(item.image, device, 1, guided)
        image = pipe.video_processor.preprocess(item.image, height=height, width=width).to(device)
        noise = randn_tensor(image.shape, generator=generator, device=device, dtype=image.dtype)
        image = image + item.param("noise_aug_strength") * noise
        with pipe.vae_dtype_kept():  # as the pipeline upcasts a float16 VAE, and back even on failure
            if pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast:
                pipe.vae.to(dtype=torch.float32)
            image_latents = pipe._encode_vae_image(
                image, device=device, num_videos_per_prompt=1, do_classifier_free_guidance=guided
            )
        image_latents = image_latents.to(image_embeddings.dtype).unsqueeze(1).repeat(1, frames, 1, 1, 1)
        # 2. Motion conditioning, this scene's scheduler and its initial latents
        added_time_ids = pipe._get_add_time_ids(
            item.param("fps") - 1,
            item.param("motion_bucket_id"),
            item.param("noise_aug_strength"),
            image_embeddings.dtype,
            1,
            1,
            guided,
        ).to(device)
        scheduler = copy.deepcopy(pipe.scheduler)
        scheduler.set_timesteps(item.param("num_inference_steps"), device=device)
        shape = (
            1,
            frames,
            pipe.unet.config.in_channels // 2,
            height // pipe.vae_scale_factor,
            width // pipe.vae_scale_factor,
        )
        latents = randn_tensor(shape, generator=generator, device=device, dtype=image_embeddings.dtype)
        latents = latents * scheduler.init_noise_sigma
        ramp = torch.linspace(item.param("min_guidance_scale"), item.param("max_guidance_scale"), frames)
        return SVDSceneState(
            item=item,
            scheduler=scheduler,
            latents=latents,
            image_latents=image_latents,
            image_embeddings=image_embeddings,
            added_time_ids=added_time_ids,
            guidance=ramp.to(device, latents.dtype).reshape(1, frames, 1, 1, 1),
            guided=guided,
        )

    def key(self, state: SceneState) -> tuple[Any, ...]:
        return tuple(state.latents.shape)

    def split(self, states: list[SceneState]) -> list[list[SceneState]]:
        """Runs of ``states`` whose UNet rows (two for a guided scene, one otherwise) stay within what one
        call may hold at their shape (`PerVideoConditioningSVDPipeline.max_unet_rows`)."""
        item = states[0].item
        most = self.pipeline.max_unet_rows(
            item.param("width"), item.param("height"), item.param("num_frames")
        )
        calls: list[list[SceneState]] = []
        rows = 0
        for state in states:
            need = len(_svd(state).image_latents)
            if not calls or rows + need > most:
                calls.append([])
                rows = 0
            calls[-1].append(state)
            rows += need
        return calls

    def advance(self, states: list[SceneState]) -> None:
        scenes = [_svd(state) for state in states]
        inputs, timesteps = [], []
        for scene in scenes:
            t = scene.timesteps[scene.step]
            rows = torch.cat([scene.latents] * 2) if scene.guided else scene.latents
            rows = scene.scheduler.scale_model_input(rows, t)
            inputs.append(torch.cat([rows, scene.image_latents], dim=2))
            timesteps.append(t.reshape(1).expand(rows.shape[0]))
        noise = self.pipeline.unet(
            torch.cat(inputs),
            torch.cat(timesteps),
            encoder_hidden_states=torch.cat([scene.image_embeddings for scene in scenes]),
            added_time_ids=torch.cat([scene.added_time_ids for scene in scenes]),
            return_dict=False,
        )[0]
        for scene, pred in zip(scenes, noise.split([len(i) for i in inputs]), strict=True):
            if scene.guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + scene.guidance * (cond - uncond)
            t = scene.timesteps[scene.step]
            scene.latents = scene.scheduler.step(pred, t, scene.latents).prev_sample
            scene.step += 1

    def finish(self, state: SceneState) -> SceneFrames:
        pipe, item = self.pipeline, state.item
        frames = pipe.decode_latents(state.latents, item.param("num_frames"), item.param("decode_chunk_size"))
        video = pipe.video_processor.postprocess_video(video=frames, output_type="np")
        return SceneFrames(
            frames=to_uint8(video, "SVD", self.dtype)[0], seed=item.seed, seconds=0.0, generator="svd"
        )


def _svd(state: SceneState) -> SVDSceneState:
    assert isinstance(state, SVDSceneState)
    return state


__all__ = ["SVDSceneState", "SVDStepper"]
