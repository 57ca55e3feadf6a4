"""``python -I -m fmn_tui``: how the ssh login shell starts the TUI (see README.md)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
