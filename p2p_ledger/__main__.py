"""``python -m p2p_ledger ...``: the same command as ``p2p-ledger ...`` (works without PATH)."""

import sys

from .cli.main import main

sys.exit(main())
