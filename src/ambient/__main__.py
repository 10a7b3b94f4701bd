"""``python -m ambient`` is the ``ambient`` command."""

from ambient.cli.main import main

if __name__ == "__main__":
    main()
