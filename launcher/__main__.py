"""``python -m launcher``: the ``fedssl-launch`` command line."""

import sys

from launcher.cli import main

sys.exit(main())
