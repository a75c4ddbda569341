"""``python -m ankicollab_media``: see ``cli``."""

import sys

from .cli import main

sys.exit(main())
