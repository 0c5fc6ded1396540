"""``python -m dfbst_np.bench``: the same as ``python -m dfbst_np bench``."""
import sys

from .cli import main

sys.exit(main())
