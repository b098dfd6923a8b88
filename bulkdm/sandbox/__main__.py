"""``python -m bulkdm.sandbox``: run the sandbox until SIGINT or SIGTERM."""

from __future__ import annotations

from bulkdm.sandbox.cli import main

raise SystemExit(main())
