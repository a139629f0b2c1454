from trustpod.cli.main import main

raise SystemExit(main())
