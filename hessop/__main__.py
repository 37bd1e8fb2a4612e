"""``python -m hessop``: the same as the ``hessop`` command."""

from hessop.cli import main

raise SystemExit(main())
