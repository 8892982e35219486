"""The ``connector`` command: run, sandbox, demo (the handlers of ``dlq`` and ``tenants``:
``connector/_cli_ops.py``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connector import __version__
from connector._cli_ops import (
    dlq_command,
    resync_command,
    settings_for_answer,
    tenants_command,
    trace_command,
)
from connector.constants import Stage
from connector.errors import BrokerUnavailable, ConfigError
from connector.vendors import VENDORS, target

if TYPE_CHECKING:
    from connector.config import MappingSettings


def _run(args: argparse.Namespace) -> int:
    from connector import app, logs
    from connector.config import load_settings, log_renamed

    settings = load_settings(args.config)
    logs.configure(settings.log_level)
    log_renamed(settings)
    logs.register_secret(settings.sink.api_key.get_secret_value())
    logs.register_secret(settings.kafka.sasl_password.get_secret_value())
    asyncio.run(app.main(settings))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from connector.sandbox import Faults, Sandbox

    async def serve() -> None:
        def faults() -> Faults:
            return Faults(
                latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate
            )

        tenants = {
            f"t{i:04d}": Sandbox(
                api_key=f"{args.api_key}-t{i:04d}",
                rate_per_minute=args.rate_per_minute,
                burst=args.burst,
                faults=faults(),
            )
            for i in range(args.tenants)
        }
        async with Sandbox(
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            rate_per_minute=args.rate_per_minute,
            burst=args.burst,
            faults=faults(),
            tenants=tenants,
        ) as sb:
            print(f"sandbox listening on {sb.url} (Loop Orders API under /api/v1)", flush=True)
            if tenants:
                print(
                    f"{len(tenants)} tenants under {sb.url}/t/t0000 ... (key <api-key>-t0000 ...)", flush=True
                )
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.drift:
        from connector.demo_drift import run_drift_demo

        return run_drift_demo()
    if args.example:
        from connector.demo_example import run_example

        return run_example(args.example)
    from connector.demo import run_demo

    return run_demo(events=args.events, orders=args.orders)


def _mapping_settings(args: argparse.Namespace, always: bool) -> MappingSettings | None:
    """The mapping section of ``--config`` (and the environment), with the command line's
    ``--envelope``, ``--mapping``, ``--function`` and ``--registry-url`` over it; None when nothing
    names a mapping and ``always`` is false (``connector validate`` as before mappings)."""
    from pydantic import ValidationError

    from connector.config import MappingSettings, load_settings

    given = {
        "envelope": args.envelope,
        "file": args.mapping,
        "function": args.function,
        "registry_url": args.registry_url,
    }
    flags = {k: v for k, v in given.items() if v}
    if args.config:
        base = load_settings(args.config).mapping.model_dump()
    elif flags or always:
        base = {}
    else:
        return None
    if flags.get("file"):
        base.pop("function", None)
    if flags.get("function"):
        base.pop("file", None)
    try:
        return MappingSettings.model_validate({**base, **flags})
    except ValidationError as exc:
        raise ConfigError(f"mapping: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _validate(args: argparse.Namespace) -> int:
    from connector.validate import run

    mapping = _mapping_settings(args, always=False)
    try:
        return run(
            args.file,
            target(args.kind, args.api_version),
            args.max_message_bytes,
            mapping=mapping,
            records=args.records,
        )
    except OSError as exc:
        print(f"connector: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2


def _map(args: argparse.Namespace) -> int:
    from connector.explain import run

    mapping = _mapping_settings(args, always=True)
    assert mapping is not None
    line = args.line if args.explain else None
    to = target(args.kind, args.api_version)
    try:
        if args.file == "-":
            return run(sys.stdin.buffer, mapping, to, args.max_message_bytes,
                       sys.stdout, records=args.records, explain_line=line)  # fmt: skip
        with open(args.file, "rb") as handle:
            return run(handle, mapping, to, args.max_message_bytes,
                       sys.stdout, records=args.records, explain_line=line)  # fmt: skip
    except OSError as exc:
        print(f"connector: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    import urllib.request

    settings = settings_for_answer(args.config)
    path = "/readyz" if args.ready else "/healthz"
    url = f"http://127.0.0.1:{settings.metrics.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            ok = response.status == 200
    except OSError as exc:
        print(f"connector check: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def _config(args: argparse.Namespace) -> int:
    import json

    from connector.logs import redact_url

    settings = settings_for_answer(args.config)
    shown = json.dumps(settings.model_dump(mode="json"), indent=2)
    print(redact_url(shown))  # secrets are SecretStr (masked); a URL's userinfo too
    return 0


def _samples(args: argparse.Namespace) -> int:
    from connector.demo import create_topics, produce
    from connector.samples import make_stream

    async def go() -> None:
        stream = make_stream(args.events, args.orders, seed=args.seed)
        if args.partitions:
            await create_topics(args.bootstrap_servers, {args.topic: args.partitions})
        await produce(args.bootstrap_servers, args.topic, stream.events)
        print(f"produced {len(stream.events)} events for {len(stream.latest)} orders to {args.topic}")

    asyncio.run(go())
    return 0


EXAMPLES: dict[tuple[str, ...], tuple[str, ...]] = {
    (): (
        "connector demo",
        "connector sandbox --port 8080",
        "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS=broker:9092 CONNECTOR_SINK__API_KEY=... connector run",
    ),
    ("run",): (
        "connector run --config connector.toml",
        "CONNECTOR_KAFKA__TOPICS=orders CONNECTOR_SINK__BASE_URL=https://api.loopreturns.com connector run",
    ),
    ("sandbox",): (
        "connector sandbox --port 8080 --api-key sandbox-key --rate-per-minute 300",
        "connector sandbox --latency-ms 5 --error-rate 0.1 --timeout-rate 0.01",
    ),
    ("validate",): (
        "connector validate events.jsonl",
        "connector validate --kind shoplazza - < events.jsonl",
        "connector validate --api-version 2026-10 events.jsonl",
        "connector validate --records --mapping examples/shopify/mapping.toml examples/shopify/events.jsonl",
        "connector validate --records --config examples/debezium/connector.toml "
        "examples/debezium/events.jsonl",
    ),
    ("map",): (
        "connector map --explain --line 4 --records --mapping examples/shopify/mapping.toml "
        "examples/shopify/events.jsonl",
        "connector map --explain --records --config examples/debezium/connector.toml "
        "examples/debezium/events.jsonl",
        "connector map --envelope cloudevents --records - < cloudevents.jsonl",
    ),
    ("check",): ("connector check", "connector check --ready --timeout 2"),
    ("config",): ("connector config show",),
    ("config", "show"): ("CONNECTOR_SINK__KIND=shoplazza connector config show --config connector.toml",),
    ("dlq",): ("connector dlq inspect", "connector dlq redrive --stage deliver --status 422 --dry-run"),
    ("dlq", "inspect"): (
        "connector dlq inspect --topic orders.dlq --samples 3",
        "connector dlq inspect --json",
    ),
    ("dlq", "redrive"): (
        "connector dlq redrive --to api --status 401 --dry-run",
        "connector dlq redrive --external-id ORD-1001 --since 2026-01-01T00:00:00Z",
        "connector dlq redrive --to source --stage validate --again",
    ),
    ("samples",): (
        "connector samples --bootstrap-servers 127.0.0.1:9092 --topic orders --events 500 --partitions 4",
    ),
    ("demo",): (
        "connector demo",
        "connector demo --events 1000 --orders 200",
        "connector demo --example shopify",
        "connector demo --example examples/debezium",
        "connector demo --drift",
    ),
    ("trace",): (
        "connector trace ORD-1001",
        "connector trace ORD-1001 --since 2026-12-01T00:00:00Z --json",
        "connector trace ORD-1001 --no-vendor --max-records 200000",
        "connector trace ORD-1001 --key ORD-1001",
        "CONNECTOR_TENANTS__PATH=config/tenants.toml connector trace ORD-1001 --tenant acme",
    ),
    ("resync",): (
        "connector resync --since 2026-12-01T00:00:00Z",
        "connector resync --all --share 0.1",
        "CONNECTOR_TENANTS__PATH=config/tenants.toml connector resync --all --tenant acme",
        "connector resync status",
        "connector resync status --json",
        "connector resync cancel",
    ),
    ("tenants",): (
        "CONNECTOR_TENANTS__PATH=config/tenants.toml connector tenants",
        "connector tenants --url http://connector-0:9108 --json",
    ),
}


def _add_examples(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give ``parser`` and every subcommand below it an ``examples:`` epilog (from :data:`EXAMPLES`),
    and each subcommand its one-line help as the description its own ``--help`` shows."""
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[path])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                child.description = child.description or helps.get(name)
                _add_examples(child, (*path, name))


def _mapping_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings whose [mapping] section applies (flags override it)")
    parser.add_argument("--envelope", choices=["native", "cloudevents", "debezium"], help="mapping.envelope")
    parser.add_argument("--mapping", metavar="FILE", help="a mapping file of JMESPath expressions")
    parser.add_argument("--function", metavar="MODULE:FN", help="a Python mapping function")
    parser.add_argument("--registry-url", help="schema registry for Avro in the Confluent wire format")
    parser.add_argument(
        "--records",
        action="store_true",
        help='each line is a record {"key", "headers", "value"}, not a value',
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="connector",
        description="Keep a vendor's copy of every order (Loop Returns, Shoplazza) at the latest state\n"
        "read from Kafka: coalesced, rate-limited API calls, a dead-letter topic for what cannot succeed.",
    )
    parser.add_argument("--version", action="version", version=f"orders-connector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="consume order events and sync them to the vendor API")
    run.add_argument("--config", help="TOML file of settings (environment variables override it)")
    run.set_defaults(func=_run)

    sb = sub.add_parser("sandbox", help="serve a local stand-in of the vendor's Orders API")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8080)
    sb.add_argument("--api-key", default="sandbox-key")
    sb.add_argument("--rate-per-minute", type=float, default=300.0)
    sb.add_argument("--burst", type=float, default=None, help="bucket size (default: 1 s of budget)")
    sb.add_argument("--latency-ms", type=float, default=0.0)
    sb.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 5xx")
    sb.add_argument("--timeout-rate", type=float, default=0.0, help="fraction left hanging")
    sb.add_argument(
        "--tenants",
        type=int,
        default=0,
        help="also serve N accounts under /t/t0000 ... (each its own budget)",
    )
    sb.set_defaults(func=_sandbox)

    val = sub.add_parser("validate", help="check events offline (JSON lines), print every error")
    val.add_argument("file", help="a file of JSON lines, or - for standard input")
    val.add_argument("--kind", choices=sorted(VENDORS), default="loop", help="vendor rules")
    val.add_argument("--api-version", default="", help="e.g. 2026-10, where created_at is required")
    val.add_argument("--max-message-bytes", type=int, default=1024 * 1024)
    _mapping_arguments(val)
    val.set_defaults(func=_validate)

    mp = sub.add_parser(
        "map", help="run the mapping stage offline: each event as the connector's envelope, or --explain one"
    )
    mp.add_argument("file", help="a file of JSON lines, or - for standard input")
    mp.add_argument("--explain", action="store_true", help="print every step's output for one event")
    mp.add_argument("--line", type=int, default=1, help="--explain: the event on this line (default 1)")
    mp.add_argument("--kind", choices=sorted(VENDORS), default="loop", help="vendor rules")
    mp.add_argument("--api-version", default="")
    mp.add_argument("--max-message-bytes", type=int, default=1024 * 1024)
    _mapping_arguments(mp)
    mp.set_defaults(func=_map)

    chk = sub.add_parser("check", help="exit 0 if the running connector is healthy (container checks)")
    chk.add_argument("--config", help="TOML settings (for metrics.port); environment overrides")
    chk.add_argument("--ready", action="store_true", help="check /readyz instead of /healthz")
    chk.add_argument("--timeout", type=float, default=3.0)
    chk.set_defaults(func=_check)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="print the effective settings (secrets masked)")
    show.add_argument("--config", help="TOML settings; environment overrides")
    show.set_defaults(func=_config)

    dq = sub.add_parser("dlq", help="inspect or redrive a dead-letter topic")
    dq_sub = dq.add_subparsers(dest="dlq_command", required=True)
    ins = dq_sub.add_parser("inspect", help="summarize by stage, status and reason, with sample external_ids")
    red = dq_sub.add_parser("redrive", help="send selected dead letters back to the source topic or the API")
    for p in (ins, red):
        p.add_argument("--config", help="TOML settings (broker, security, sink); environment overrides")
        p.add_argument("--topic", help="the dead-letter topic (default: dlq.topic)")
        p.set_defaults(func=dlq_command)
    ins.add_argument("--samples", type=int, default=5, help="external_ids shown per group")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    red.add_argument("--to", choices=["source", "api"], default="source")
    red.add_argument("--stage", action="append", default=[], choices=[s.value for s in Stage])
    red.add_argument(
        "--tenant",
        action="append",
        default=[],
        help="the shop the event is for or names (with tenants.path: any of its names, aliases too)",
    )
    red.add_argument("--status", action="append", default=[], help="HTTP status, or 'none'")
    red.add_argument("--external-id", action="append", default=[])
    red.add_argument("--since", help="dead-lettered at or after this ISO time")
    red.add_argument("--until", help="dead-lettered before this ISO time")
    red.add_argument("--dry-run", action="store_true", help="list what would be redriven; send nothing")
    red.add_argument(
        "--again", action="store_true", help="start over, ignoring what this filter redrove before"
    )
    red.add_argument(
        "--rate", type=float, default=1.0, help="--to api: requests a second, reads included (default 1)"
    )
    red.add_argument(
        "--force",
        action="store_true",
        help="--to api: send even when the API may hold a newer state (no updated_at to compare); "
        "--to source: send even when a newer event of its order follows it in its source partition",
    )

    smp = sub.add_parser("samples", help="produce sample order events (with duplicates) to a topic")
    smp.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    smp.add_argument("--topic", default="orders")
    smp.add_argument("--events", type=int, default=500)
    smp.add_argument("--orders", type=int, default=100)
    smp.add_argument("--seed", type=int, default=7)
    smp.add_argument("--partitions", type=int, default=0, help="create the topic with this many partitions")
    smp.set_defaults(func=_samples)

    ten = sub.add_parser("tenants", help="list the shops served, with a running member's state of each")
    ten.add_argument("--config", help="TOML settings (tenants.path, metrics.port); environment overrides")
    ten.add_argument("--url", help="a member's metrics address (default: 127.0.0.1 at metrics.port)")
    ten.add_argument("--json", action="store_true", help="machine-readable output")
    ten.set_defaults(func=tenants_command)

    tr = sub.add_parser(
        "trace", help="the story of one order: its events, what became of each, the vendor's copy"
    )
    tr.add_argument("order", metavar="ORDER", help="the order's external id")
    tr.add_argument("--config", help="TOML file of settings, as for run (environment variables override it)")
    tr.add_argument("--since", metavar="ISO8601", help="read records from this time on (default: all)")
    tr.add_argument(
        "--max-records", type=int, default=1_000_000, help="records read at most (default 1,000,000)"
    )
    tr.add_argument("--tenant", default="", help="with many shops (tenants.path): the shop whose order it is")
    tr.add_argument("--key", help="the order's record key: read only its partition (else every partition)")
    tr.add_argument("--no-vendor", action="store_true", help="do not ask the vendor (no request sent)")
    tr.add_argument("--json", action="store_true", help="machine-readable output")
    tr.set_defaults(func=trace_command)

    rs = sub.add_parser(
        "resync",
        help="ask the running fleet to send every order's newest state again (status, cancel)",
        description="connector resync --since ISO8601 | --all: the members send the newest state of every "
        "order with an event since then again, below live traffic, one call per order. "
        "connector resync status: how far it is. connector resync cancel: stop it.",
    )
    rs.add_argument("action", nargs="?", choices=["status", "cancel"], help="(none: ask for a resync)")
    rs.add_argument("--config", help="TOML file of settings, as for run (environment variables override it)")
    rs.add_argument("--since", metavar="ISO8601", help="the orders with an event at or after this time")
    rs.add_argument("--all", action="store_true", help="every order the source topics hold")
    rs.add_argument("--tenant", help="with many shops (tenants.path): only this shop's orders")
    rs.add_argument("--share", type=float, help="the floor share of the budget (default resync.share, 0.2)")
    rs.add_argument("--json", action="store_true", help="status: machine-readable output")
    rs.set_defaults(func=resync_command)

    demo = sub.add_parser("demo", help="local broker + sandbox + connector + sample events, end to end")
    demo.add_argument("--events", type=int, default=400)
    demo.add_argument("--orders", type=int, default=100)
    demo.add_argument(
        "--example", metavar="NAME|DIR", help="run an example of examples/ (shopify, debezium) instead"
    )
    demo.add_argument(
        "--drift",
        action="store_true",
        help="instead: the vendor loses, reverts and edits delivered orders; the audits find and repair them",
    )
    demo.set_defaults(func=_demo)
    _add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``connector`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailable as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
