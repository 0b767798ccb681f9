from sqenv.cli import main

raise SystemExit(main())
