"""``python -m cli``: same as the ``p2pchat`` console script."""

import sys

from cli.main import main

sys.exit(main())
