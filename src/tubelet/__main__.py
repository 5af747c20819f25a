"""``python -m tubelet`` (and ``torchrun -m tubelet``) runs the ``tubelet`` command."""

import sys

from .cli import main

sys.exit(main())
