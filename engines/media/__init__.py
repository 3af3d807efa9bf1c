"""The media engine: encoding, interpolation, stitching, title cards, thumbnails and captions."""

from engines.media.captions import Cue, write_webvtt
from engines.media.cards import placeholder_image, render_card, title_card_frames
from engines.media.processor import VideoProcessingConfig, VideoProcessor

__all__ = [
    "Cue",
    "VideoProcessingConfig",
    "VideoProcessor",
    "placeholder_image",
    "render_card",
    "title_card_frames",
    "write_webvtt",
]
