"""Annotation readers: one small reader per benchmark format, chosen by name via ``FORMAT:ROOT``.

>>> from hybridtower.data.annotations import load_split, list_formats
>>> split = load_split("msrvtt:datasets/msrvtt", "test-1ka")     # doctest: +SKIP
>>> split.summary()["captions"]                                   # doctest: +SKIP
1000
"""

from .base import (
    IMAGE_EXTENSIONS,
    CaptionRecord,
    DataError,
    MediaIndex,
    Reader,
    SplitData,
    VideoRecord,
    get_reader,
    list_formats,
    choose_test_split,
    list_splits,
    load_split,
    parse_data_spec,
    register_reader,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "CaptionRecord",
    "DataError",
    "MediaIndex",
    "Reader",
    "SplitData",
    "VideoRecord",
    "get_reader",
    "list_formats",
    "choose_test_split",
    "list_splits",
    "load_split",
    "parse_data_spec",
    "register_reader",
]
