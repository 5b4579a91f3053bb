from trio_orchestrator.cli import main

raise SystemExit(main())
