# SPDX-License-Identifier: MIT
"""``python -m echo_actors`` runs the command line."""

import sys

from echo_actors.cli import main

sys.exit(main())
