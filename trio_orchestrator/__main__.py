try:
    from trio_orchestrator.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing us: no traceback
    raise SystemExit(130) from None

raise SystemExit(main())
