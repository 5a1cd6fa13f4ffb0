"""Identity costs: issuing and verifying an X509-SVID, ML-DSA-65 against ECDSA P-256 in the same run.

    .venv/bin/python tests/bench/bench_identity.py [--n 200]

For each key type, a throwaway built-in CA of that type (ML-DSA-65 root for ML-DSA leaves, P-256
root for P-256 leaves, as a classical mesh would have) and, timed one by one (median and p90):
making an SVID (key generation + certificate signature), issuing one through the CA (the same plus
its record on disk, what ``x0tta ca issue`` and self-renewal do), the
verification a peer runs on every handshake (:func:`validate_x509_svid`: parse the rules, walk the
chain, one signature check, revocation list and policy), and loading + verifying a CRL with 1000
revoked serials (what an agent does when crl.pem changes). Also the leaf's size in DER, which every
handshake carries. Prints a Markdown table; the ratio ML-DSA/ECDSA is the figure to compare.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core import certs
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import RevocationList, validate_x509_svid

ID = "spiffe://mesh.x0tta/node/bench"


def timed(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def measure(kt: KeyType, tmp: Path, n: int) -> dict[str, float]:
    ca = CertificateAuthority.init(tmp / kt.value, "mesh.x0tta", key_type=kt)
    issue = timed(lambda: ca.issue(ID, 3600, key_type=kt), n)
    sid, key, root = SpiffeId.parse(ID), ca._key, ca.root
    make = timed(lambda: certs.make_svid(key, root, sid, time.time(), 3600, kt), n)
    svid = ca.issue(ID, 3600, key_type=kt)
    ca.revoke(list(range(1, 1001)))
    rl = ca.revocation_list()
    bundles = {"mesh.x0tta": ca.bundle()}
    policy = AuthorizationPolicy.build("mesh.x0tta", allowed_patterns=("/node/*",))
    now = time.time()
    assert validate_x509_svid(svid.cert_chain, bundles, now, revocations=[rl], policy=policy).ok
    verify = timed(lambda: validate_x509_svid(svid.cert_chain, bundles, now, revocations=[rl], policy=policy), n)
    crl_pem, bundle = ca.crl_pem(), ca.bundle()
    crl = timed(lambda: RevocationList.from_crl(crl_pem, bundle), max(10, n // 10))
    return {
        "make": make[0],
        "issue": issue[0],
        "issue_p90": issue[1],
        "verify": verify[0],
        "verify_p90": verify[1],
        "crl": crl[0],
        "leaf_bytes": len(svid.leaf.public_bytes(serialization.Encoding.DER)),
        "root_bytes": len(ca.root.public_bytes(serialization.Encoding.DER)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-identity-") as tmp:
        pq = measure(KeyType.ML_DSA_65, Path(tmp), args.n)
        cl = measure(KeyType.ECDSA_P256, Path(tmp), args.n)
    us = 1e6
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, n={args.n}")
    print("| measure | ML-DSA-65 | ECDSA P-256 (baseline) | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("new SVID: keygen + sign (certs.make_svid), median", "make", us, "us"),
        ("CA issue: the same + record in state.json (flock, fsync), median", "issue", us, "us"),
        ("CA issue, p90", "issue_p90", us, "us"),
        ("verify a peer's SVID (validate_x509_svid), median", "verify", us, "us"),
        ("verify a peer's SVID, p90", "verify_p90", us, "us"),
        ("load + verify a CRL of 1000 serials, median", "crl", us, "us"),
        ("leaf certificate, DER", "leaf_bytes", 1, "B"),
        ("root certificate, DER (not sent)", "root_bytes", 1, "B"),
    ]
    for label, key, scale, unit in rows:
        a, b = pq[key] * scale, cl[key] * scale
        print(f"| {label} | {a:,.0f} {unit} | {b:,.0f} {unit} | {a / b:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
