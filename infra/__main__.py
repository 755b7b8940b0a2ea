"""Two entry points in one file, because Pulumi.yaml's ``main: infra/`` makes this the program.

* ``python -m infra <command>`` (``__spec__.name == "infra.__main__"``) runs the offline tools in
  :mod:`infra.cli` (render, promote).
* The Pulumi language host runs this directory as a script (``runpy.run_path``, ``__spec__`` names
  it plain ``__main__``): that is the Pulumi program, whose body lives in :mod:`infra.program`.
"""

from __future__ import annotations

import sys


def _run_as_module() -> bool:
    spec = globals().get("__spec__")
    return spec is not None and spec.name == "infra.__main__"


if _run_as_module():
    from infra.cli import main as cli_main

    sys.exit(cli_main())
else:
    from infra.program import main

    main()
