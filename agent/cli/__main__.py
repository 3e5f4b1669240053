"""``python -m agent.cli``: the same entry as the installed ``callagent``."""

import sys

from agent.cli import launch

sys.exit(launch())
