#!/usr/bin/env python3
"""The Merkle tree's growth under the head lock, old body against new (docs/PERFORMANCE.md,
"A shorter hold"): the one-statement-per-level body of migration 20261203000950 against the
one-insert body of 20261205000100, each run on copies of a stored chain's hashes in a scratch
schema, alternating, and the nodes each wrote compared.

Usage: scripts/bench_tree.py DATABASE_URL [APPENDS] [RECORDS_PER_APPEND]
DATABASE_URL names a database holding a chain of more than 20,000 records, e.g. the one
`cargo bench --bench pipeline -- throughput 20000` leaves (`…/bench_pipeline`); APPENDS is cut
to what the chain holds beyond its first 20,000 records.
The bodies are read from the migrations, so what runs is what the migrations install.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD = ROOT / "migrations" / "20261203000950_evidence_tree_on_append.sql"
NEW = ROOT / "migrations" / "20261205000100_evidence_tree_one_insert.sql"
BASE = 20_000


def body(migration: Path, name: str) -> str:
    """The migration's function, renamed into the scratch schema, reading scratch tables."""
    text = migration.read_text()
    start = text.index("CREATE OR REPLACE FUNCTION evidence_after_append")
    end = text.index("$$;", start) + 3
    function = text[start:end].replace("evidence_after_append", f"scratch.{name}")
    function = function.replace("public.", "scratch.")
    return function.replace("PERFORM scratch.evidence_tree_adopt();", "RAISE EXCEPTION 'adopt';")


def psql(url: str, *commands: str) -> list[str]:
    args = ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    url = sys.argv[1]
    appends = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    setup = f"""
DROP SCHEMA IF EXISTS scratch CASCADE;
CREATE SCHEMA scratch;
CREATE TABLE scratch.evidence AS SELECT seq, hash FROM public.evidence;
ALTER TABLE scratch.evidence ADD PRIMARY KEY (seq);
CREATE TABLE scratch.evidence_log AS SELECT * FROM public.evidence_log;
CREATE TABLE scratch.tree0 AS SELECT * FROM public.evidence_tree
 WHERE (idx + 1) * (1::bigint << level) <= {BASE};
CREATE TABLE scratch.evidence_tree (LIKE public.evidence_tree INCLUDING ALL);
{body(OLD, "after_old")}
{body(NEW, "after_new")}
CREATE FUNCTION scratch.run(which text, n int, per int) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz;
BEGIN
    TRUNCATE scratch.evidence_tree;
    INSERT INTO scratch.evidence_tree SELECT * FROM scratch.tree0;
    ANALYZE scratch.evidence_tree;
    t0 := clock_timestamp();
    FOR i IN 0 .. n - 1 LOOP
        IF which = 'old' THEN
            PERFORM scratch.after_old({BASE} + 1 + i * per, {BASE} + (i + 1) * per);
        ELSE
            PERFORM scratch.after_new({BASE} + 1 + i * per, {BASE} + (i + 1) * per);
        END IF;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
END $$;
"""
    stored = int(psql(url, "SELECT count(*) FROM evidence")[0])
    appends = min(appends, max(stored - BASE, 0) // per)
    if appends < 10:
        # A short `scripts/bench` run leaves too small a chain: say so, and let the rest run.
        print(f"tree growth: skipped, {stored} records (needs {BASE + 10 * per} or more)")
        return
    psql(url, setup)
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(3):
        for which in ("old", "new"):
            times[which].append(float(psql(url, f"SELECT scratch.run('{which}', {appends}, {per})")[0]))
    psql(url, "CREATE TABLE scratch.by_old AS SELECT * FROM scratch.evidence_tree")
    psql(url, f"SELECT scratch.run('old', {appends}, {per})",
         "DROP TABLE scratch.by_old; CREATE TABLE scratch.by_old AS SELECT * FROM scratch.evidence_tree",
         f"SELECT scratch.run('new', {appends}, {per})")
    differ = psql(url, """SELECT count(*) FROM ((SELECT * FROM scratch.by_old EXCEPT SELECT * FROM scratch.evidence_tree)
                          UNION ALL (SELECT * FROM scratch.evidence_tree EXCEPT SELECT * FROM scratch.by_old)) d""")[0]
    nodes = psql(url, "SELECT count(*) FROM scratch.evidence_tree")[0]
    psql(url, "DROP SCHEMA scratch CASCADE")
    print(f"tree growth: {appends} appends of {per} records after {BASE:,} leaves, ms per append (three runs)")
    print("| body | ms per append |")
    print("|---|---|")
    for which, label in (("old", "one statement per level (20261203000950)"), ("new", "one insert (20261205000100)")):
        print(f"| {label} | {' / '.join(f'{t:.2f}' for t in times[which])} |")
    print(f"nodes after the run: {nodes}; nodes that differ between the bodies: {differ}")
    for which in ("old", "new"):
        print(f"figure tree_append_{which}_ms {sorted(times[which])[1]}")
    if differ != "0":
        raise SystemExit("the bodies wrote different trees")


if __name__ == "__main__":
    main()
