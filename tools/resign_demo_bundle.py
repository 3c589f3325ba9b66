"""Re-sign the committed demo bundle with the committed DEMO key, then check it.

Run after anything in ``sdk/data/demo_bundle/manifest.json`` changes (for example when a
merge adds manifest fields)::

    python tools/resign_demo_bundle.py

The same as ``hccatom bundle sign sdk/data/demo_bundle --key
sdk/data/demo_key/demo_signing_key.pem``. The demo key is public: its signature proves nothing
about a real bundle (see sdk/data/demo_key/README.md).
"""

from __future__ import annotations

import sys

from hccatom.bundle import load_bundle
from hccatom.bundle.signature import DEMO_PRIVATE_KEY_PATH, DEMO_PUBLIC_KEY_PATH
from hccatom.bundle.signer import sign_bundle
from hccatom.demo import DEMO_BUNDLE_DIR


def main() -> int:
    """Sign, reload with the demo public key as the trusted key, print the digest."""
    sig = sign_bundle(DEMO_BUNDLE_DIR, DEMO_PRIVATE_KEY_PATH)
    with load_bundle(DEMO_BUNDLE_DIR, trusted_keys=[DEMO_PUBLIC_KEY_PATH]) as bundle:
        print(f"{DEMO_BUNDLE_DIR}: signed with the demo key {sig.key_id}; "
              f"digest {bundle.sha256}; {bundle.signature.text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
