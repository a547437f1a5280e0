"""`python -m heimbuero`: the same as the `heimbuero` command."""

from heimbuero.cli import main

raise SystemExit(main())
