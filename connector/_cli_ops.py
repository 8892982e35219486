"""The handlers of ``connector dlq`` (inspect, redrive) and ``connector tenants``, and how a command
whose output is its answer reads its settings (:func:`settings_for_answer`); the parser and the other
subcommands are ``connector/cli.py``'s."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import Settings


def settings_for_answer(config: str | None) -> Settings:
    """The settings of a command whose output is its answer: a setting given by its old name is
    logged on stderr (``setting_renamed``), out of the answer's way."""
    from connector import logs
    from connector.config import load_settings, log_renamed

    settings = load_settings(config)
    if settings.renamed:
        logs.configure("WARNING", sys.stderr)
        log_renamed(settings)
    return settings


def iso_ms(text: str | None) -> int | None:
    """``--since``/``--until``: an ISO time as milliseconds since the epoch (None when not given)."""
    if not text:
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise ConfigError(f"not an ISO timestamp: {text!r}") from None


def dlq_command(args: argparse.Namespace) -> int:
    """``connector dlq inspect`` and ``connector dlq redrive``."""
    from connector import deadletter as dlq
    from connector import logs
    from connector.config import load_settings, log_renamed

    settings = load_settings(args.config)
    logs.configure("WARNING")
    log_renamed(settings)
    logs.register_secret(settings.sink.api_key.get_secret_value())
    logs.register_secret(settings.kafka.sasl_password.get_secret_value())
    topic = args.topic or settings.dlq.topic
    if args.dlq_command == "inspect":
        asyncio.run(dlq.inspect(settings, topic, samples=args.samples, as_json=args.json))
        return 0
    if args.to == "api" and settings.tenants.path:
        raise ConfigError(
            "dlq redrive --to api sends with the sink section's key: with tenants.path set, redrive "
            "--to source (the connector routes each event to its tenant again)"
        )
    tenants = set(args.tenant)
    if tenants and settings.tenants.path:  # a shop's dead letters may carry a name it had before
        from connector.tenants import with_aliases

        named = with_aliases(settings.tenants.path, tenants)
        if named != tenants:
            print(
                f"--tenant: also the names these shops had: {', '.join(sorted(named - tenants))}",
                file=sys.stderr,
            )
        tenants = named
    flt = dlq.Filter(
        set(args.stage),
        set(args.status),
        set(args.external_id),
        iso_ms(args.since),
        iso_ms(args.until),
        tenants,
    )
    result = asyncio.run(
        dlq.redrive(settings, topic, flt, args.to, args.dry_run, args.again, rate=args.rate, force=args.force)
    )
    return 1 if result.failed else 0


def trace_command(args: argparse.Namespace) -> int:
    """``connector trace ORDER``: exit 0 when the vendor's copy is in sync (or deleted, as it should
    be), 1 otherwise (behind, ahead, missing, unknown, no events)."""
    from connector import logs
    from connector.config import load_settings
    from connector.readback import Verdict
    from connector.trace import as_json, render, trace

    settings = load_settings(args.config)
    logs.configure("WARNING")
    logs.register_secret(settings.sink.api_key.get_secret_value())
    logs.register_secret(settings.kafka.sasl_password.get_secret_value())
    story = asyncio.run(
        trace(
            settings,
            args.order,
            since_ms=iso_ms(args.since),
            max_records=args.max_records,
            ask_vendor=not args.no_vendor,
            tenant=args.tenant,
            key=args.key.encode() if args.key is not None else None,
        )
    )
    print(json.dumps(as_json(story), indent=2) if args.json else render(story))
    return 0 if story.verdict in (Verdict.IN_SYNC, Verdict.DELETED) else 1


def tenants_command(args: argparse.Namespace) -> int:
    """``connector tenants``: the shops served, as a table or ``--json``."""
    import json

    from connector.tenants import COLUMNS, listing

    settings = settings_for_answer(args.config)
    rows, note = listing(settings, args.url or f"http://127.0.0.1:{settings.metrics.port}")
    if args.json:
        print(json.dumps({"tenants": rows, "note": note}))
        return 0
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    print(f"({len(rows)} tenants; {note})")
    return 0


def resync_command(args: argparse.Namespace) -> int:
    """``connector resync``: ask for one (``--since``/``--all``), or its ``status`` (exit 0 once
    done), or ``cancel`` it."""
    import dataclasses

    from connector import logs, resynccmd
    from connector.config import load_settings
    from connector.resynclog import State

    settings = load_settings(args.config)
    logs.configure("WARNING")
    logs.register_secret(settings.kafka.sasl_password.get_secret_value())
    if args.action == "status":
        state = asyncio.run(resynccmd.status(settings))
        if args.json:
            print(json.dumps(resynccmd.as_json(state), indent=2))
        else:
            print(resynccmd.render(state, *resynccmd.budget_of(settings, state.request)))
        return 0 if state.done else 1
    if args.action == "cancel":
        state = asyncio.run(resynccmd.status(settings))
        if state.request is None or state.request.state is State.CANCELLED:
            print("no resync to cancel")
            return 1
        asyncio.run(resynccmd.publish(settings, dataclasses.replace(state.request, state=State.CANCELLED)))
        print(f"resync {state.request.id} cancelled")
        return 0
    if bool(args.since) == bool(args.all):
        raise ConfigError("give one of --since ISO8601 (orders with an event since then) or --all")
    if args.share is not None and not 0 < args.share <= 1:
        raise ConfigError(f"--share must be above 0 and at most 1, not {args.share}")
    since_ms = iso_ms(args.since)
    since = since_ms / 1000 if since_ms is not None else None
    request = resynccmd.new_request(settings, since, args.tenant, args.share)
    asyncio.run(resynccmd.publish(settings, request))
    print(f"resync {request.id} asked of group {request.group} (topic {settings.resync_topic}); "
          "follow it with: connector resync status")  # fmt: skip
    return 0
