"""Image-caption pairs (for pretraining a tiny CLIP): the generic JSONL with an ``image`` key.

``{"image": "relative/path.png", "caption": "text"}`` per line, optional ``"image_id"``-like
``"video_id"`` and ``"split"``; ROOT is the ``.jsonl`` file (or a folder holding ``images.jsonl``).
Records reuse :class:`VideoRecord` / :class:`CaptionRecord`: ``video_id`` is the image id and ``path``
the image file. ``hybridtower synth`` writes ``images.jsonl`` + ``images/`` in this format.
"""

from __future__ import annotations

from .base import IMAGE_EXTENSIONS, register_reader
from .jsonl import PathJsonlReader


@register_reader
class ImagesReader(PathJsonlReader):
    name = "images"
    media_key = "image"
    default_name = "images.jsonl"
    extensions = IMAGE_EXTENSIONS
    description = 'ROOT = a .jsonl file of image-caption pairs: {"image": relative/path, "caption": text[, "split"]}'
