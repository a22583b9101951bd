"""``python -m sysid_msstcn``: the command line (see :mod:`sysid_msstcn.cli`)."""

from sysid_msstcn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
