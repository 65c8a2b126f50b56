"""JobLog keeps backend output bounded."""

from __future__ import annotations

from imagegate.backends.base import JobLog


def test_log_is_bounded_and_says_so() -> None:
    log = JobLog(max_bytes=10)
    log.write("12345")
    log.write("67890abc")
    log.write("more")
    assert log.text() == "1234567890\n[log truncated]\n"
    assert log.truncated


def test_multibyte_text_is_cut_on_a_character_boundary() -> None:
    log = JobLog(max_bytes=5)
    log.write("ééé")
    assert log.text().startswith("éé")
    assert "\ufffd" not in log.text()
