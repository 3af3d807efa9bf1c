"""Loading diffusers pipelines the same way for every engine: where from, on which device, in which dtype.

Both the SVD engine and the keyframe painter go through :func:`load_pipeline`, so a missing folder, a model
that is not in the local cache while downloads are off, or an unreadable weights file always surface as one
:class:`~core.errors.ModelUnavailable` with a message that says what to fix. The fallback policy catches
exactly that error.

torch is imported inside the functions that use it, never at the top: `ModelSourceConfig` is part of the
application config, which replicas that hold no model read too (the ingress, the job runner, the encoder),
and importing torch maps a few hundred MB of libraries into each of them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ModelUnavailable

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# A dtype by its name in torch; configs hold names, and `placement_for` makes the torch dtype.
DTypeName = Literal["float16", "bfloat16", "float32"]


class ModelSourceConfig(BaseModel):
    """Where a model comes from and where it runs; engine configs extend this."""

    # `model_path` would otherwise collide with pydantic's reserved `model_` prefix.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        description="Hugging Face Hub model id, used when `model_path` is not set. Loaded from the local "
        "Hugging Face cache, or downloaded when `auto_download` is on."
    )
    model_path: str | None = Field(
        default=None,
        description="A local folder written by `save_pretrained` (or a downloaded snapshot). When set it wins "
        "over `model`, and nothing is ever downloaded.",
    )
    auto_download: bool = Field(
        default=False,
        description="Allow downloading `model` from the Hub when it is not cached. Costs several GB of disk "
        "and minutes of start-up on first use; off means a missing model fails fast (and falls back).",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        default="auto",
        description="Where to run: `auto` picks CUDA when a device is visible, else the CPU (minutes per "
        "clip at full size). `cuda` without a visible device makes the model unavailable.",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto",
        description="Weights and activations dtype. `auto` is float16 on CUDA (half the memory of float32; "
        "fp16 variant files are used when present) and float32 on CPU. float16 on CPU falls back to "
        "float32 with a warning because CPU half-precision kernels are slow or missing.",
    )
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads when running on the CPU. Ray sets OMP_NUM_THREADS=1 in replicas with a "
        "fraction of a CPU, so a CPU replica uses one core unless this is set; match the replica's num_cpus. "
        "Ignored on CUDA.",
    )

    # What `dtype: auto` is on CUDA. A model whose activations overflow in float16 overrides it with
    # bfloat16, and an explicit float16 then warns.
    cuda_auto_dtype: ClassVar[DTypeName] = "float16"
    # Components that load in a dtype of their own whatever `dtype` says (diffusers' per-component
    # `torch_dtype`): e.g. a VAE its authors load in float32.
    component_dtypes: ClassVar[Mapping[str, DTypeName]] = {}


@dataclass(frozen=True)
class Placement:
    """The device and dtype a model actually got, after `auto` was resolved.

    Args:
        device: where it runs.
        dtype: the dtype of its weights and activations.
        component_dtypes: pipeline components kept in another dtype (name to dtype).
    """

    device: torch.device
    dtype: torch.dtype
    component_dtypes: Mapping[str, torch.dtype] = field(default_factory=dict)

    @property
    def load_dtype(self) -> torch.dtype | dict[str, torch.dtype]:
        """What `load_pipeline` takes: the dtype, or diffusers' dict of one per component and a default."""
        if not self.component_dtypes:
            return self.dtype
        return {"default": self.dtype, **self.component_dtypes}


def resolve_placement(config: ModelSourceConfig) -> Placement:
    """Turn the config's `device` and `dtype` (possibly `auto`) into concrete torch values on this machine.

    Raises:
        ModelUnavailable: `device="cuda"` was asked for but no CUDA device is visible.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if config.device == "cuda" and not has_cuda:
        raise ModelUnavailable("device='cuda' was configured but no CUDA device is visible to this process")
    device = torch.device(
        "cuda" if config.device == "cuda" or (config.device == "auto" and has_cuda) else "cpu"
    )
    bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    return placement_for(config, device, bf16_supported=bf16)


def placement_for(config: ModelSourceConfig, device: torch.device, bf16_supported: bool = True) -> Placement:
    """The dtypes ``config`` gets on ``device``, a machine-independent half of `resolve_placement`.

    Args:
        config: the model's settings; its class says what `auto` means on CUDA (`cuda_auto_dtype`) and
            which components keep a dtype of their own (`component_dtypes`).
        device: the resolved device.
        bf16_supported: whether that device computes in bfloat16 (GPUs before Ampere do not).
    """
    dtype: str
    if config.dtype != "auto":
        dtype = config.dtype
    elif device.type != "cuda":
        dtype = "float32"
    elif config.cuda_auto_dtype == "bfloat16" and not bf16_supported:
        # float16 would overflow where bfloat16 was asked for: full precision is the safe substitute.
        logger.warning("this GPU has no bfloat16; dtype 'auto' uses float32 (twice the weight memory)")
        dtype = "float32"
    else:
        dtype = config.cuda_auto_dtype
    if dtype == "float16" and device.type == "cpu":
        logger.warning("dtype='float16' is not supported well on CPU; using float32 instead")
        dtype = "float32"
    if dtype == "float16" and config.cuda_auto_dtype == "bfloat16":
        logger.warning(
            "dtype='float16' overflows in this model (it runs in bfloat16): expect NaN; use 'auto'"
        )
    components = {name: _torch_dtype(d) for name, d in config.component_dtypes.items() if d != dtype}
    return Placement(device=device, dtype=_torch_dtype(dtype), component_dtypes=components)


@contextlib.contextmanager
def cpu_threads(count: int | None, device: torch.device | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads when the model runs on the CPU (None: leave it as it is).

    OpenMP thread counts belong to the calling thread and pipelines run in worker threads, so the count is
    set around each call rather than once at load.
    """
    if device is None or device.type != "cpu" or not count:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_pipeline(
    pipeline_cls: Any,
    config: ModelSourceConfig,
    dtype: torch.dtype | Mapping[str, torch.dtype],
    marker: str = "model_index.json",
) -> Any:
    """Load a diffusers pipeline (or a transformers model) from `config.model_path` or the Hub id `config.model`.

    Args:
        pipeline_cls: the class whose `from_pretrained` to use (a pipeline, an auto-pipeline, a model).
        config: the source settings (`model`, `model_path`, `auto_download`).
        dtype: the torch dtype to load the weights in, or one per component with a "default"
            (`Placement.load_dtype`).
        marker: the file a saved folder has (`config.json` for a transformers model).

    Raises:
        ModelUnavailable: the folder is missing, the model is not cached and downloads are off, the
            download failed, or a weights or config file is unreadable. The message says which and where.
    """
    import torch

    if config.model_path is not None:
        folder = Path(config.model_path).expanduser()
        if not (folder / marker).is_file():
            raise ModelUnavailable(
                f"model_path={str(folder)!r} is not a saved model folder (no {marker} there); "
                "point it at a folder written by save_pretrained, or unset it to use the model id"
            )
        source, local_only = str(folder), True
    else:
        source, local_only = config.model, not config.auto_download

    kwargs: dict[str, Any] = {_dtype_keyword(): dtype, "local_files_only": local_only}
    # Half-precision variant files are half the download and load straight into fp16; not every
    # repository ships them, so try them first and quietly take the full-precision files otherwise.
    default = dtype.get("default", torch.float32) if isinstance(dtype, Mapping) else dtype
    variants = ["fp16", None] if default == torch.float16 else [None]
    last_error: Exception | None = None
    for variant in variants:
        try:
            return pipeline_cls.from_pretrained(source, variant=variant, **kwargs)
        # Loading touches the filesystem, the network, JSON, safetensors and torch; every one of their
        # failures means the same thing to the caller: this model cannot be used now.
        except Exception as exc:
            last_error = exc
    where = "the local folder" if config.model_path else ("the Hub" if not local_only else "the local cache")
    hint = "" if config.model_path or not local_only else " (auto_download is off)"
    raise ModelUnavailable(
        f"cannot load {pipeline_cls.__name__} from {where} {source!r}{hint}: "
        f"{type(last_error).__name__}: {_first_line(last_error)}"
    ) from last_error


def load_placed(pipeline_cls: Any, config: ModelSourceConfig) -> tuple[Any, Placement]:
    """Load a diffusers pipeline in the dtypes ``config`` resolves to on this machine, with its progress bars
    off (engines log their own progress); the caller applies its options and moves it to the device.

    Returns:
        The pipeline, still on the CPU, and the `Placement` it is meant for.

    Raises:
        ModelUnavailable: as `resolve_placement` and `load_pipeline`.
    """
    placement = resolve_placement(config)
    pipeline = load_pipeline(pipeline_cls, config, placement.load_dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, placement


def release_memory(device: torch.device | None) -> None:
    """Collect garbage and, on CUDA, hand cached blocks back to the driver so other replicas can use them."""
    gc.collect()
    if device is not None and device.type == "cuda":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error, including the older plain RuntimeError spelling."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def is_recompile_limit(exc: BaseException) -> bool:
    """True when torch.compile gave up on a new shape: a fullgraph compile raises this once a function has
    been compiled `torch._dynamo.config.recompile_limit` times (batch sizes and sizes that keep changing)."""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    return isinstance(exc, FailOnRecompileLimitHit)


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype), name
    return dtype


def _dtype_keyword() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (the old name warns); older releases only know the old
    # one and would silently ignore `dtype`, so pick by whether this release has the renaming helper.
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else "unknown error"
    return text.splitlines()[0][:300] if text else type(exc).__name__
