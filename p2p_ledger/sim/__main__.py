"""``python -m p2p_ledger.sim run FILE... | fuzz | bench``: the simulator without the main CLI."""

import sys

from .cli import main

sys.exit(main())
