"""The match's schedule: sessions, mid-session intervals and ends of session (no randomness).

One session up to best of 15 (a mid-session Interval, reasonId 19, after frame 4 from best of 7
up); from best of 17, sessions of about 8-10 frames (best of 19: 10 + 9) with a mid-session
interval and End of session (reasonId 20) breaks, two sessions a day when the match starts by
14:00 UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta

INTERVAL_REASON = ("Interval", 19)
END_OF_SESSION_REASON = ("End of session", 20)


def session_length(best_of: int) -> int:
    """Frames per session: one session up to best of 15, else about 8-10 frames each."""
    sessions = best_of // 8 if best_of >= 17 else 1
    return -(-best_of // sessions)


def interval_after(best_of: int, frames_done: int) -> tuple[str, int] | None:
    """The break in play that follows frame ``frames_done`` of a match that goes on."""
    if best_of < 7:
        return None
    length = session_length(best_of)
    in_session = frames_done % length
    if in_session == 0:
        return END_OF_SESSION_REASON
    if in_session == (4 if length <= 9 else length // 2):
        return INTERVAL_REASON
    return None


def next_session(start: datetime, best_of: int, frames_done: int) -> datetime:
    """When the session after frame ``frames_done`` is scheduled: at the start time and, if it is
    early enough, six hours later the same day; then the next day."""
    per_day = 2 if start.hour <= 14 else 1
    day, later = divmod(frames_done // session_length(best_of), per_day)
    return start + timedelta(days=day, hours=6 * later)
