"""``python -m nsfw_space ...``"""

import sys

from nsfw_space.cli import main

if __name__ == "__main__":  # guarded: benchmark servers start in spawned child processes
    sys.exit(main())
