"""Wan's denoising loop cut into steps, for `scheduling: step` (see `engines.video.step_loop`).

`WanImageToVideoPipeline.__call__` encodes the prompts, prepares latents and the keyframe's condition from
the generator, then calls the transformer once per step for the prompt and once more for the negative
prompt. Here each scene does the first part alone (through the engine's own `prepare_latents`, so it draws
what it would alone), and each step puts every active scene's conditional row, and the unconditional row of
those with guidance, into one transformer call with one timestep row each. The prompt embeddings are padded
to `max_sequence_length`, so every scene's rows stack.

Wan 2.2 TI2V (`expand_timesteps`) mixes the keyframe into the first latent frame through a mask and gives
those tokens timestep 0; otherwise the condition is concatenated to the latents. Checkpoints that also
encode the keyframe with CLIP (Wan 2.1 image-to-video) have no stepper and run call by call. A scene
without a keyframe (`keyframes: none`) is made as the text-to-video pipeline makes it.
Wan 2.2 A14B switches to its second transformer below `boundary_ratio` (the scene's own, or the checkpoint's),
with `guidance_scale_2`: scenes on either side step apart. A scene's `flow_shift` gives it a scheduler of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from engines.video.base import SceneFrames, to_uint8
from engines.video.step_loop import SceneState
from engines.video.wan.options import options_for


@dataclass(eq=False, kw_only=True)
class WanSceneState(SceneState):
    """A scene's Wan conditioning: prompt rows, and the keyframe's condition (None from text alone)."""

    prompt_embeds: torch.Tensor  # (1, L, D)
    negative_embeds: torch.Tensor | None  # (1, L, D); None without guidance
    condition: torch.Tensor | None  # None from text alone
    mask: torch.Tensor | None  # expand_timesteps: 0 on the keyframe's latent frame, 1 elsewhere
    boundary: float | None  # the timestep below which the second expert steps (Wan 2.2 A14B); None: one
    guidance_2: float  # the guidance of the second expert's steps
    ignored: tuple[str, ...]  # the request's fields this checkpoint has no use for


class WanStepper:
    """`Stepper` over a loaded `PerVideoImageWanPipeline` (and its text-to-video twin for text-only scenes).

    Args:
        pipeline: the engine's image-to-video pipeline.
        text_pipeline: a callable returning the text-to-video pipeline over the same modules.
        max_sequence_length: prompt tokens, as `video.max_sequence_length`.
        dtype: the runtime dtype's name, for the non-finite output message.
    """

    def __init__(self, pipeline: Any, text_pipeline: Any, max_sequence_length: int, dtype: str) -> None:
        self.pipeline = pipeline
        self.text_pipeline = text_pipeline
        self.max_sequence_length = max_sequence_length
        self.dtype = dtype
        self.expand = bool(pipeline.config.get("expand_timesteps", False))
        model = pipeline.transformer if pipeline.transformer is not None else pipeline.transformer_2
        self.model_dtype = model.dtype
        self.patch = tuple(model.config.patch_size[1:])

    def start(self, item: Any) -> WanSceneState:
        pipe = self.pipeline
        device = pipe._execution_device
        height, width = item.param("height"), item.param("width")
        guided = item.param("guidance_scale") > 1
        generator = [torch.Generator(device=device).manual_seed(item.seed)]
        # 1. The prompts (checkpoints with a CLIP image encoder, Wan 2.1 I2V, have no stepper: see the engine)
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=[item.prompt],
            negative_prompt=[item.negative_prompt],
            do_classifier_free_guidance=guided,
            num_videos_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
            device=device,
        )
        options = options_for(pipe, item)
        scheduler = copy.deepcopy(options.scheduler)
        scheduler.set_timesteps(item.param("num_inference_steps"), device=device)
        ratio = options.boundary_ratio
        # 2. Latents and the keyframe's condition, drawn as that pipeline draws them
        channels = pipe.vae.config.z_dim
        condition = mask = None
        if item.image is None:
            latents = self.text_pipeline().prepare_latents(
                1, channels, height, width, item.run_frames, torch.float32, device, generator
            )
            if self.expand:
                mask = torch.ones(latents.shape, dtype=torch.float32, device=device)
        else:
            image = pipe.video_processor.preprocess(item.image, height=height, width=width)
            prepared = pipe.prepare_latents(
                image.to(device, dtype=torch.float32),
                1,
                channels,
                height,
                width,
                item.run_frames,
                torch.float32,
                device,
                generator,
            )
            latents, condition = prepared[0], prepared[1]
            mask = prepared[2] if self.expand else None
        return WanSceneState(
            item=item,
            scheduler=scheduler,
            latents=latents,
            prompt_embeds=prompt_embeds.to(self.model_dtype),
            negative_embeds=negative_embeds.to(self.model_dtype) if guided else None,
            condition=condition,
            mask=mask,
            boundary=None if ratio is None else ratio * scheduler.config.num_train_timesteps,
            guidance_2=item.param("guidance_scale")
            if options.guidance_scale_2 is None
            else options.guidance_scale_2,
            ignored=options.ignored,
        )

    def key(self, state: SceneState) -> tuple[Any, ...]:
        wan = _wan(state)
        return (tuple(wan.latents.shape), wan.condition is None, self._second_model(wan))

    def split(self, states: list[SceneState]) -> list[list[SceneState]]:
        """One call: Wan's transformer attends over each row's whole token sequence, so its attention batch
        is its rows (at most two per scene), far from any kernel's limit."""
        return [states]

    def advance(self, states: list[SceneState]) -> None:
        scenes = [_wan(state) for state in states]
        pipe = self.pipeline
        model = pipe.transformer_2 if self._second_model(scenes[0]) else pipe.transformer
        inputs, timesteps, texts, rows = [], [], [], []
        for scene in scenes:
            t = scene.timesteps[scene.step]
            model_input, timestep = self._model_input(scene, t)
            for embeds in (scene.prompt_embeds, scene.negative_embeds):
                if embeds is None:
                    continue
                inputs.append(model_input)
                timesteps.append(timestep)
                texts.append(embeds)
            rows.append(2 if scene.negative_embeds is not None else 1)
        predicted = model(
            hidden_states=torch.cat(inputs),
            timestep=torch.cat(timesteps),
            encoder_hidden_states=torch.cat(texts),
            return_dict=False,
        )[0]
        for scene, pred in zip(scenes, predicted.split(rows), strict=True):
            noise = pred[:1]
            if len(pred) == 2:
                # Guidance is on or off for the whole scene (`guidance_scale` > 1), as the pipeline has it.
                guidance = (
                    scene.guidance_2 if self._second_model(scene) else scene.item.param("guidance_scale")
                )
                noise = pred[1:] + guidance * (pred[:1] - pred[1:])
            t = scene.timesteps[scene.step]
            scene.latents = scene.scheduler.step(noise, t, scene.latents, return_dict=False)[0]
            scene.step += 1

    def finish(self, state: SceneState) -> SceneFrames:
        scene, pipe = _wan(state), self.pipeline
        latents = scene.latents
        if self.expand and scene.condition is not None and scene.mask is not None:
            latents = (1 - scene.mask) * scene.condition + scene.mask * latents
        vae = pipe.vae
        latents = latents.to(device=next(vae.parameters()).device, dtype=vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        video = vae.decode(latents / std + mean, return_dict=False)[0]
        frames = to_uint8(pipe.video_processor.postprocess_video(video, output_type="np"), "Wan", self.dtype)
        item = scene.item
        return SceneFrames(
            frames=frames[0][: item.param("num_frames")],
            seed=item.seed,
            seconds=0.0,
            generator="wan",
            ignored=scene.ignored,
        )

    # -- internals -------------------------------------------------------------------------------------

    def _second_model(self, scene: WanSceneState) -> bool:
        """Whether this step of ``scene`` runs on Wan 2.2 A14B's low-noise transformer."""
        if scene.boundary is None or scene.done:
            return False
        return bool(scene.timesteps[scene.step] < scene.boundary)

    def _model_input(self, scene: WanSceneState, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = scene.latents
        if self.expand:
            assert scene.mask is not None
            if scene.condition is not None:
                latents = (1 - scene.mask) * scene.condition + scene.mask * latents
            tokens = (scene.mask[0][0][:, :: self.patch[0], :: self.patch[1]] * t).flatten()
            return latents.to(self.model_dtype), tokens.unsqueeze(0)
        if scene.condition is not None:
            latents = torch.cat([latents, scene.condition], dim=1)
        return latents.to(self.model_dtype), t.reshape(1)


def _wan(state: SceneState) -> WanSceneState:
    assert isinstance(state, WanSceneState)
    return state


__all__ = ["WanSceneState", "WanStepper"]
