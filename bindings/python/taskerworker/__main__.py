"""``python3 -m taskerworker``: see :mod:`taskerworker.runner`."""

import sys

from .runner import main

sys.exit(main())
