"""The names of tenants' own dimensions: ``tenant.<escaped tenant>.<dimension>``."""

from __future__ import annotations

import hashlib

#: Tenant names up to this many characters once escaped are spelled out in their
#: dimension's name; longer ones are cut and end in a hash of the whole name.
_TENANT_NAME_MAX = 64


def tenant_dimension(tenant: str, dimension: str) -> str:
    """Name of a tenant's own dimension: ``tenant.<escaped tenant>.<dimension>``.

    The escape is one to one, so distinct tenants never share a bucket (``acme.com``
    and ``acme_com`` stay apart): ASCII letters, digits and ``-`` are kept, and every
    other UTF-8 byte, ``_`` and ``.`` included, is written ``_xx`` in hex. A name
    longer than 64 characters once escaped (or empty) keeps its first 46 and ends in
    ``_h`` (which no escape writes) and 16 hex digits of its SHA-256.
    """
    safe = "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or b == 0x2D) else f"_{b:02x}"
        for b in tenant.encode("utf-8")
    )
    if len(safe) > _TENANT_NAME_MAX or not safe:
        digest = hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:16]
        safe = f"{safe[: _TENANT_NAME_MAX - 18]}_h{digest}"
    return f"tenant.{safe}.{dimension}"


def base_name(dimension: str) -> str:
    """The group's dimension a tenant's own one copies (``tenant.acme.requests`` ->
    ``requests``); any other name as it is."""
    return dimension.rsplit(".", 1)[-1] if dimension.startswith("tenant.") else dimension
