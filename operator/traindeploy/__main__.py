from traindeploy.cli import main

raise SystemExit(main())
