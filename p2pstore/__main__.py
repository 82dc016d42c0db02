"""``python -m p2pstore ...`` runs the same CLI as the ``p2pstore`` command."""

from p2pstore_cli.main import main

if __name__ == "__main__":
    main()
