"""``python -m hea_screen``: the ``hea-screen`` command."""

import sys

from hea_screen.cli import main

sys.exit(main())
