"""``python -m loadtest``: the load-test harness (loadtest/harness.py, loadtest/report.py)."""

from loadtest.report import main

raise SystemExit(main())
