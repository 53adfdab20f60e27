"""Bench: each parser of guest bytes against its worst hostile input.

The parsers that run in a worker (not in the appliance's kernel) get inputs a
hostile guest could write, at the size caps guestpool reads them with. Each
input is made by one process and parsed by a fresh one, which reports the
parse's wall time and its peak RSS, beside the interpreter with the parsers
imported and with the input read (a worker reads a database whole, up to its
cap). What a case shows is the bound a worker pays, not a typical cost; a
refused input says so in ``outcome``.

    python -m guestpool.bench.hostile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._options import results_dir

MiB = 1024 * 1024

#: case -> (what the input is, the parser, how the input is made: Python that
#: binds ``data``)
CASES: dict[str, tuple[str, str, str]] = {
    "dpkg-tiny-stanzas": (
        "dpkg status, 128 MiB of 3.3 million tiny stanzas", "packages: dpkg",
        "data = ''.join(f'Package: p{i}\\nStatus: install ok installed\\nVersion: 1\\n\\n'"
        " for i in range(3_300_000))[:128 * 2**20]"),
    "dpkg-huge-name": (
        "dpkg status, one 70 MiB package name", "packages: dpkg",
        "data = 'Package: ' + 'a' * (70 * 2**20) + '\\nStatus: install ok installed\\n'"),
    "apk-tiny-records": (
        "apk installed, 128 MiB of tiny records", "packages: apk",
        "data = ''.join(f'P:p{i}\\nV:1-r0\\n\\n' for i in range(9_000_000))[:128 * 2**20]"),
    "rpm-sqlite-recursive-view": (
        "rpmdb.sqlite whose Packages is a recursive view", "packages: rpm (sqlite sandbox)",
        "import sqlite3\n"
        "con = sqlite3.connect(':memory:')\n"
        "con.execute('CREATE VIEW Packages AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM r) SELECT randomblob(100000) AS blob FROM r')\n"
        "data = con.serialize()"),
    "rpm-sqlite-many-rows": (
        "rpmdb.sqlite, 200,000 rows of 600-byte blobs (120 MiB)",
        "packages: rpm (sqlite sandbox)",
        "import sqlite3\n"
        "con = sqlite3.connect(':memory:')\n"
        "con.execute('CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)')\n"
        "con.executemany('INSERT INTO Packages (blob) VALUES (?)',"
        " ((os.urandom(600),) for _ in range(200_000)))\n"
        "con.commit()\n"
        "data = con.serialize()"),
    "rpm-bdb-noise": (
        "rpm Berkeley DB Packages, 128 MiB of random pages", "packages: rpm (bdb)",
        "data = os.urandom(128 * 2**20)"),
    "rpm-ndb-noise": (
        "rpm ndb Packages.db, 128 MiB of random bytes", "packages: rpm (ndb)",
        "data = os.urandom(128 * 2**20)"),
    "rpm-header-huge-count": (
        "one rpm header claiming 2^31 index entries", "packages: rpm header",
        "import struct\n"
        "data = struct.pack('>II', 2**31 - 1, 16 * 2**20) + os.urandom(4096)"),
}

#: the parse each case runs (``data`` bound); the result's size goes to stdout
PARSE = {
    "packages: dpkg": "from guestpool.inspectors._inventory import PackagesInspector as P\n"
                      "from guestpool.inspectors._inventory import _bounded\n"
                      "out = _bounded(P._dpkg(data, 20_000))",
    "packages: apk": "from guestpool.inspectors._inventory import PackagesInspector as P\n"
                     "from guestpool.inspectors._inventory import _bounded\n"
                     "out = _bounded(P._apk(data, 20_000))",
    "packages: rpm (sqlite sandbox)": "from guestpool.inspectors._sandbox import sqlite_blobs\n"
                                      "out = sqlite_blobs(data, limit=20_000, deadline=60)",
    "packages: rpm (bdb)": "from guestpool.inspectors._bdb import hash_values\n"
                           "out = hash_values(data, limit=20_000)",
    "packages: rpm (ndb)": "from guestpool.inspectors._ndb import ndb_blobs\n"
                           "out = ndb_blobs(data, limit=20_000)",
    "packages: rpm header": "from guestpool.inspectors._rpmdb import parse_header\n"
                            "out = parse_header(data)",
}

MAKER = """
import os, sys
{make}
with open(sys.argv[1], "w" if isinstance(data, str) else "wb") as f:
    f.write(data)
print("text" if isinstance(data, str) else "bytes")
"""

RUNNER = """
import json, os, resource, sys, time
from guestpool._errors import InspectorError
import guestpool.inspectors._inventory, guestpool.inspectors._sandbox
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(sys.argv[1], "r" if sys.argv[2] == "text" else "rb") as f:
    data = f.read()  # as a worker holds it: read whole, up to the cap
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
{parse}
    outcome = f"{{len(out) if out is not None else 0}} items"
except (InspectorError, ValueError) as e:
    outcome = "refused: " + str(e)[:120]
seconds = time.perf_counter() - t
print(json.dumps({{"seconds": seconds, "outcome": outcome, "input_mib":
                  len(data) / 2**20, "rss_before_mib": before / 1024,
                  "baseline_mib": baseline / 1024}}))
"""


def run_case(name: str) -> dict[str, Any]:
    what, parser, make = CASES[name]
    code = RUNNER.format(parse="\n".join("    " + line for line in PARSE[parser].splitlines()))
    with tempfile.TemporaryDirectory(prefix="guestpool-hostile-") as tmp, \
            tempfile.TemporaryFile() as out:
        given = Path(tmp) / "input"  # made by another process: its cost is not the parse's
        kind = subprocess.run([sys.executable, "-c", MAKER.format(make=make), str(given)],
                              capture_output=True, text=True, check=True).stdout.strip()
        proc = subprocess.Popen([sys.executable, "-c", code, str(given), kind], stdout=out,
                                stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else ""
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        return {"case": name, "input": what, "parser": parser,
                "outcome": f"crashed ({proc.returncode}): {err.strip()[-200:]}"}
    found = json.loads(text)
    return {"case": name, "input": what, "parser": parser, "outcome": found["outcome"],
            "input_mib": round(found["input_mib"], 1), "seconds": round(found["seconds"], 2),
            "interpreter_mib": round(found["baseline_mib"], 1),
            "with_input_mib": round(found["rss_before_mib"], 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="run only these cases (repeatable)")
    ap.add_argument("--results", type=Path, default=None,
                    help="folder for hostile-inputs.json (default: bench/results)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.case or CASES:
        print(f"hostile inputs: {name} ...", file=sys.stderr, flush=True)
        rows.append(run_case(name))
    report = {"date": time.strftime("%Y-%m-%d"), "cases": rows,
              "rlimit_data_note": "pooled workers run under RLIMIT_DATA = appliance memory "
                                  "+ 768 MiB (guestpool.appliance._worker.limit_memory)"}
    out = results_dir(args.results) / "hostile-inputs.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
