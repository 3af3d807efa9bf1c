"""The scene writer: turns a user's idea into a :class:`Script` of scenes.

Backends: ``template`` (no model, the default and the fallback), ``transformers`` (a local instruct model
with JSON-schema constrained decoding) and ``openai`` (any OpenAI-compatible endpoint). Whatever a model
answers, :meth:`ScriptWriter.write` returns a script within :class:`WriterBounds`.
"""

from engines.writer.config import OpenAIWriterConfig, TransformersWriterConfig, WriterBounds, WriterConfig
from engines.writer.prompting import approx_clip_tokens, improve_visual_prompt
from engines.writer.script import (
    MOTION_BUCKET_IDS,
    Motion,
    Scene,
    Script,
    draft_json_schema,
    motion_bucket_id,
)
from engines.writer.writer import ScriptWriter, WriteRequest

__all__ = [
    "MOTION_BUCKET_IDS",
    "Motion",
    "OpenAIWriterConfig",
    "Scene",
    "Script",
    "ScriptWriter",
    "TransformersWriterConfig",
    "WriterBounds",
    "WriteRequest",
    "WriterConfig",
    "approx_clip_tokens",
    "draft_json_schema",
    "improve_visual_prompt",
    "motion_bucket_id",
]
