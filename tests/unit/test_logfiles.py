"""SIGUSR1's log reopening: a rotated (renamed) file is left, the path is
written again."""

from __future__ import annotations

import logging

from procrastinate_prefork.observability import logfiles


def test_reopen_writes_to_the_path_again_after_a_rename(tmp_path):
    path = tmp_path / "prefork.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("test_logfiles")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("before")
        path.rename(tmp_path / "prefork.log.1")
        assert logfiles.reopen() >= 1
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "prefork.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"
