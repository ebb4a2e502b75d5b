from double11.cli import main

raise SystemExit(main())
