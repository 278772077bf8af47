"""``python -m bench``: the same as the ``tvflux-bench`` command."""

import sys

from bench.cli import main

sys.exit(main())
