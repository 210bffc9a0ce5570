"""Healing on real processes: after a long cut the cluster agrees again within seconds.

Before the healing policy, the redial delay grown during a cut decided the heal (a 60 s cut:
14 s to converge); now an unreachable peer is probed at least every second whatever the cut's
length. The bound asserted is the documented one (2 s + transfer time) with room for a busy
machine; the benchmark (``p2p-ledger bench --only heal``) measures the distribution.
"""

from __future__ import annotations

import pytest
import trio

from p2p_ledger.harness.heal import real_heal_times

pytestmark = pytest.mark.slow


async def test_a_25_s_cut_heals_within_seconds() -> None:
    # With the old 30 s cap, 25 s of failed redials had grown the delay to 6.4-12.8 s.
    heals = await trio.to_thread.run_sync(lambda: trio.run(real_heal_times, [25.0], 1))
    assert heals[0] is not None and heals[0] < 3.0, heals
