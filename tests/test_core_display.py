import os

from hybridtower.core.display import printable, printable_path


def test_plain_text_is_unchanged():
    assert printable("a dog runs — 犬が走る.mp4") == "a dog runs — 犬が走る.mp4"


def test_control_characters_are_escaped():
    shown = printable("evil\x1b[2Jname\n\x7f.mp4")
    assert "\x1b" not in shown and "\n" not in shown and "\x7f" not in shown
    assert shown == "evil\\x1b[2Jname\\x0a\\x7f.mp4"


def test_non_utf8_bytes_show_as_hex_and_encode():
    name = os.fsdecode(b"x\xff.mp4")  # surrogateescape: lone surrogate U+DCFF
    shown = printable_path(name)
    assert shown == "x\\xff.mp4"
    shown.encode("utf-8")  # never raises
    assert printable(b"a\xfeb") == "a\\xfeb"


def test_line_separators_escaped():
    assert printable("a\u2028b\u2029c\u0085") == "a\\u2028b\\u2029c\\x85"
