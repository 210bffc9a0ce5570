"""Suite-wide settings: hypothesis never fails a test for its speed (no deadline). Machines are
shared and noisy (a 0.2 ms case took 320 ms under load); performance bounds live in the bench."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")
