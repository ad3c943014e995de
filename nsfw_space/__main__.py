"""``python -m nsfw_space ...``"""

import sys

from .cli import main

sys.exit(main())
