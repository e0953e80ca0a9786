"""`python -m dfhost`."""

from dfhost.cli import main

raise SystemExit(main())
