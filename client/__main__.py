"""python -m client: the same as the `mri-classify` command."""
from client.cli import main

raise SystemExit(main())
