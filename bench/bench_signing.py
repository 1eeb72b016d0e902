"""Ed25519 cost per batch: signing (gateway) and verifying (receiver), by body size.

python bench/bench_signing.py [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import timeit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.wire.signing import Signer, verify_payload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    signer = Signer.from_private_key(Ed25519PrivateKey.generate())
    keys = {signer.kid: signer.private_key.public_key()}
    print("body bytes | sign µs | verify µs | sign µs per reading (≈100 B each)")
    for size in (300, 10_000, 100_000):
        body = os.urandom(size // 2).hex().encode()
        payload = signer.sign_payload(body)
        sign = timeit.timeit(lambda b=body: signer.sign_payload(b), number=n) / n * 1e6
        verify = timeit.timeit(lambda p=payload: verify_payload(p, keys), number=n) / n * 1e6
        print(f"{size:>10} | {sign:7.1f} | {verify:9.1f} | {sign / max(1, size // 100):.2f}")


if __name__ == "__main__":
    main()
