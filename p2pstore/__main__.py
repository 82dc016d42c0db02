"""``python -m p2pstore ...`` runs the same CLI as the ``p2pstore`` command.

The CLI is the package ``p2pstore_cli``, which pyproject maps to the folder ``cli/`` beside this
package: that name exists once the project is installed. In a checkout that was never installed,
``cli/`` is loaded as ``p2pstore_cli`` from beside this package (its modules import each other
relatively, so the name is all they need), so ``python -m p2pstore`` works from a fresh clone.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

CLI_PACKAGE = "p2pstore_cli"


def load_cli_main() -> Callable[..., None]:
    """The CLI's ``main``: from the installed ``p2pstore_cli``, else from the checkout's ``cli/``."""
    try:
        module = importlib.import_module(f"{CLI_PACKAGE}.main")
    except ModuleNotFoundError as exc:
        if exc.name != CLI_PACKAGE:
            raise  # the CLI is there but one of its imports is missing: say which
        cli_dir = Path(__file__).resolve().parents[1] / "cli"
        init = cli_dir / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            CLI_PACKAGE, init, submodule_search_locations=[str(cli_dir)]
        )
        if not init.is_file() or spec is None or spec.loader is None:
            raise SystemExit(f"error: {CLI_PACKAGE} is not installed and {cli_dir} holds no CLI") from exc
        package = importlib.util.module_from_spec(spec)
        sys.modules[CLI_PACKAGE] = package
        spec.loader.exec_module(package)
        module = importlib.import_module(f"{CLI_PACKAGE}.main")
    main: Callable[..., None] = module.main
    return main


if __name__ == "__main__":
    load_cli_main()()
