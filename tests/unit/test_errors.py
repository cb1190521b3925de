from procrastinate_prefork import errors


def test_one_line_keeps_the_first_line_only():
    exc = ValueError("connection failed\nDETAIL:  more\nHINT:  less")
    assert errors.one_line(exc) == "connection failed"


def test_one_line_skips_leading_blank_lines():
    assert errors.one_line(OSError("\n\n  refused\nsecond")) == "refused"


def test_one_line_names_the_type_of_an_empty_exception():
    assert errors.one_line(TimeoutError()) == "TimeoutError"
