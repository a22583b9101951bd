"""``python -m sysid_msstcn.distributed``: see :func:`main`."""

from ._entry import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
