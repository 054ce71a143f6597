import gc

gc.disable()  # while the modules load: see ingest.cli.main

from ingest.cli import main  # noqa: E402

raise SystemExit(main())
