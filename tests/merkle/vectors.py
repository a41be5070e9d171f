"""Independent RFC 9162 test vectors for src/evidence/merkle.rs.

Computes, straight from the recursive definitions of RFC 9162 section 2.1 (MTH, PATH,
SUBPROOF) with hashlib only, the root of every tree of n = 1..17 leaves, the inclusion proof of
every leaf and the consistency proof from every smaller size. The leaves are 32-byte values like
the evidence chain hashes: SHA-256 of the decimal text of their index.

    python3 tests/merkle/vectors.py > tests/fixtures/merkle-vectors.json
"""

import hashlib
import json

MAX = 17


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(d):
    if len(d) == 0:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = largest_power_of_two_below(len(d))
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def largest_power_of_two_below(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def path(m, d):
    if len(d) <= 1:
        return []
    k = largest_power_of_two_below(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def main():
    leaves = [sha(str(i).encode()) for i in range(MAX)]
    cases = []
    for n in range(1, MAX + 1):
        d = leaves[:n]
        cases.append(
            {
                "size": n,
                "root": mth(d).hex(),
                "inclusion": [[h.hex() for h in path(m, d)] for m in range(n)],
                "consistency": [[h.hex() for h in subproof(m, d, True)] for m in range(1, n)],
            }
        )
    print(json.dumps({"leaves": [x.hex() for x in leaves], "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
