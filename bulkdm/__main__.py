"""``python -m bulkdm``: the same as the ``bulkdm`` console script."""

from __future__ import annotations

import sys

from bulkdm.cli import main

if __name__ == "__main__":
    sys.exit(main())
