"""Command line: python -m core {explain,train,evaluate} ..."""

from core.cli import main

raise SystemExit(main())
