"""Checking and normalising frames: PIL images or uint8 arrays in, one (T, H, W, 3) uint8 array out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from core.errors import InvalidInput

Frames = Sequence[Any] | np.ndarray


def as_frame_array(frames: Frames, param: str = "frames") -> np.ndarray:
    """Validate ``frames`` and return them as a contiguous uint8 array of shape (T, H, W, 3).

    Accepts a (T, H, W, 3) uint8 array, or a sequence of PIL images (any mode, converted to RGB) and/or
    (H, W, 3) uint8 arrays. Raises InvalidInput naming ``param`` (and the frame index) otherwise.
    """
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise InvalidInput(
                param, f"array of shape {frames.shape}", "expected shape (frames, height, width, 3)"
            )
        _check_array(frames, param)
        if len(frames) == 0:
            raise InvalidInput(param, "[]", "needs at least one frame")
        return np.ascontiguousarray(frames)
    if frames is None or len(frames) == 0:
        raise InvalidInput(param, "[]" if frames is not None else None, "needs at least one frame")
    arrays: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        name = f"{param}[{i}]"
        if isinstance(frame, Image.Image):
            array = np.asarray(frame.convert("RGB"))
        elif isinstance(frame, np.ndarray):
            if frame.ndim != 3:
                raise InvalidInput(name, f"array of shape {frame.shape}", "expected shape (height, width, 3)")
            _check_array(frame, name)
            array = frame
        else:
            raise InvalidInput(name, type(frame).__name__, "expected a PIL image or a uint8 numpy array")
        if arrays and array.shape != arrays[0].shape:
            raise InvalidInput(
                name,
                f"{array.shape[1]}x{array.shape[0]}",
                f"all frames must have one size; frame 0 is {arrays[0].shape[1]}x{arrays[0].shape[0]}",
            )
        arrays.append(array)
    return np.ascontiguousarray(np.stack(arrays))


def _check_array(array: np.ndarray, param: str) -> None:
    if array.dtype != np.uint8:
        raise InvalidInput(
            param, f"dtype {array.dtype}", "expected uint8 (0-255); scale and cast float frames first"
        )
    if array.shape[-1] != 3:
        raise InvalidInput(param, f"{array.shape[-1]} channels", "expected 3 (RGB)")
    if array.shape[-2] < 2 or array.shape[-3] < 2:
        raise InvalidInput(
            param, f"{array.shape[-2]}x{array.shape[-3]}", "frames must be at least 2x2 pixels"
        )
