from trustpod.cli.main import run

raise SystemExit(run())
