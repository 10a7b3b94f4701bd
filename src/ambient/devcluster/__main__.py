"""``python -m ambient.devcluster up|down|build``: see :mod:`ambient.devcluster.cli`."""

from ambient.devcluster.cli import main

raise SystemExit(main())
