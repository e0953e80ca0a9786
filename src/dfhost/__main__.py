"""`python -m dfhost`."""

from dfhost.cli.main import main

raise SystemExit(main())
