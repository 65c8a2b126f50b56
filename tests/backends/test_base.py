"""JobReporter keeps backend output bounded."""

from __future__ import annotations

from imagegate.backends.base import JobReporter


def test_log_is_bounded_and_says_so() -> None:
    reporter = JobReporter(max_bytes=10)
    reporter.write("12345")
    reporter.write("67890abc")
    reporter.write("more")
    assert reporter.text() == "1234567890\n[log truncated]\n"
    assert reporter.truncated


def test_multibyte_text_is_cut_on_a_character_boundary() -> None:
    reporter = JobReporter(max_bytes=5)
    reporter.write("ééé")
    assert reporter.text().startswith("éé")
    assert "\ufffd" not in reporter.text()
