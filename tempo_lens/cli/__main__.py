"""``python -m tempo_lens.cli`` — the ``tempo-lens`` command."""

from tempo_lens.cli import main

raise SystemExit(main())
