"""Replay or soak: ``python -m tests.sim --seed N [--log DEBUG]`` or ``--soak [--runs N] [--scale X]``."""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.run import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this seed, print its violations and stats")
    parser.add_argument("--first", type=int, default=0, help="first seed of a range (default 0)")
    parser.add_argument("--runs", type=int, default=1000, help="seeds to run from --first")
    parser.add_argument("--soak", action="store_true", help="longer schedules (--scale 4 unless given)")
    parser.add_argument("--scale", type=float, default=None, help="schedule length and size factor")
    parser.add_argument("--log", default="ERROR", help="log level of the replayed run (DEBUG, INFO, ...)")
    parser.add_argument("--tenants", action="store_true", help="the many-shop schedules (parking)")
    parser.add_argument(
        "--debezium", action="store_true", help="with Debezium's rows besides: deletes, tombstones, re-sends"
    )
    parser.add_argument("--audit", action="store_true", help="with the read-back audits on")
    parser.add_argument(
        "--resync", action="store_true", help="the vendor loses every order mid-run; a resync is asked"
    )
    args = parser.parse_args(argv)
    scale = args.scale or (4.0 if args.soak else 1.0)
    if args.seed is not None:
        result = run(args.seed, scale, args.log, args.tenants, args.debezium, args.audit, args.resync)
        print(result.description)
        if args.log.upper() != "ERROR":
            print(result.stats.get("log", ""))
        print({k: v for k, v in result.stats.items() if k != "log"}, "digest", result.digest)
        for v in result.violations:
            print("VIOLATION", v)
        return 1 if result.violations else 0
    failed = 0
    slowest = (0.0, -1)
    started = time.perf_counter()
    for seed in range(args.first, args.first + args.runs):
        result = run(
            seed, scale, tenants=args.tenants, debezium=args.debezium, audit=args.audit, resync=args.resync
        )
        slowest = max(slowest, (float(result.stats.get("converged_after_s", 0.0)), seed))
        if not result.ok:
            failed += 1
            print(f"seed {seed}: {result.violations[0]}")
            print(
                f"  replay: .venv/bin/python -m tests.sim --seed {seed}"
                + (f" --scale {scale:g}" if scale != 1 else "")
                + (" --tenants" if args.tenants else "")
                + (" --debezium" if args.debezium else "")
                + (" --audit" if args.audit else "")
                + (" --resync" if args.resync else "")
            )
    took = time.perf_counter() - started
    print(
        f"{args.runs} schedules, {failed} failed, {took:.1f}s ({took / args.runs * 1000:.0f} ms each); "
        f"slowest convergence after the last fault {slowest[0]:g}s (seed {slowest[1]})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
