"""The ``transformers`` backend: a local instruct model with JSON-schema constrained decoding (xgrammar).

xgrammar masks, at every step, the tokens that would break the schema, so even a weak (or random) model
produces JSON that parses and has the schema's shape and bounds.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from core.errors import ModelUnavailable
from engines.writer.backends.base import Message
from engines.writer.config import BackendName, TransformersWriterConfig

logger = logging.getLogger(__name__)

# torch's global RNG is process-wide: seeding and sampling must not interleave between threads.
_GENERATE_LOCK = threading.Lock()


class TransformersBackend:
    """A local causal LM (``AutoModelForCausalLM``) with its chat template, loaded on first use.

    Args:
        config: model id or path, device, seed, temperature and token limit.
    """

    name: BackendName = "transformers"

    def __init__(self, config: TransformersWriterConfig) -> None:
        self.config = config
        self._model: Any = None
        self._tokenizer: Any = None
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the tokenizer, the model and the grammar compiler; idempotent.

        Raises:
            ModelUnavailable: the weights are missing (and ``auto_download`` is off or the hub is
                unreachable), unreadable, or the device is not available.
        """
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            import xgrammar
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self.config.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if device.startswith("cuda") and not torch.cuda.is_available():
                raise ModelUnavailable(f"writer model: device={device!r} requested but CUDA is not available")
            local_only = not self.config.auto_download
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.config.model, local_files_only=local_only)
                model = AutoModelForCausalLM.from_pretrained(
                    self.config.model,
                    local_files_only=local_only,
                    dtype=torch.float32 if device == "cpu" else "auto",
                )
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"writer model {self.config.model!r} cannot be loaded: {exc}") from exc
            if not getattr(tokenizer, "chat_template", None):
                raise ModelUnavailable(f"writer model {self.config.model!r} has no chat template")
            model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() for its own wrapper
            # The model's vocabulary may be padded beyond the tokenizer's; the mask must cover all of it.
            info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size)
            self._compiler = xgrammar.GrammarCompiler(info)
            self._tokenizer, self._model = tokenizer, model
            logger.info("writer model %s loaded on %s", self.config.model, device)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            # Compact JSON (no free whitespace): a weak model cannot pad the answer with spaces forever.
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def complete(self, messages: list[Message], schema: dict[str, Any]) -> str:
        """Generate an answer constrained to ``schema``; same messages, schema and seed give the same text."""
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        from engines.loading import cpu_threads

        self.load()
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self._model.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.config.temperature}
            if self.config.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with (
            _GENERATE_LOCK,
            torch.inference_mode(),
            cpu_threads(self.config.cpu_threads, self._model.device),
        ):
            torch.manual_seed(self.config.seed)
            output = self._model.generate(
                **inputs,
                # A logits processor holds matcher state: one per generate() call.
                logits_processor=[LogitsProcessor(self._grammar(schema))],
                max_new_tokens=self.config.max_new_tokens,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                **sampling,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self._tokenizer.decode(new_tokens, skip_special_tokens=True)
