from __future__ import annotations

import sys

from ml.cli import main

if __name__ == "__main__":  # the guard Dask's process-based LocalCluster needs
    sys.exit(main())
