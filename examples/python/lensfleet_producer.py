#!/usr/bin/env python3
"""Add a lens job to a lensfleet queue from Python, the way BullMQ's own clients add a job.

The job data is validated against the published JSON Schema (schema/lens-job.v1.schema.json)
first; an invalid job is never added (exit 2, each schema error on stderr). A valid job is added by
BullMQ's own ``addStandardJob`` Lua script, read from the installed ``bullmq`` npm package (the
Python ``bullmq`` package from PyPI runs these same scripts), so the job is what a BullMQ
producer in any language would have added: same keys, same events, same options encoding.

Needs Debian's python3-redis, python3-msgpack and python3-jsonschema (no PyPI).

    python3 lensfleet_producer.py --redis redis://127.0.0.1:6379 --tenant yTEST_YACHT_001 \\
        --lens receiving.recent --params '{"limit": 5}' [--idempotency-key order-42] \\
        [--priority 1] [--delay-ms 60000]

A priority or a delay runs BullMQ's addPrioritizedJob or addDelayedJob script instead, as its
Queue.add does.

Prints the job id. Exit codes: 0 added (or, with a key, the same request already there), 2
invalid job or usage, 3 the idempotency key is taken by a different request (another lens or
other params; nothing added, as the SDK's IDEMPOTENCY_CONFLICT), 1 anything else (Redis
unreachable, script error).
"""

import argparse
import json
import os
import re
import sys
import time

import jsonschema
import msgpack
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_SCHEMA = os.path.join(ROOT, "schema", "lens-job.v1.schema.json")
DEFAULT_COMMANDS = os.path.join(ROOT, "node_modules", "bullmq", "dist", "cjs", "commands")
INCLUDE = re.compile(r'^--- @include "([^"]+)"\s*$')
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

# Each add script's KEYS, in its order (the scripts' headers list them), as BullMQ's Queue.add
# picks it: a delay first, then a priority, else the standard add.
ADD_SCRIPTS = {
    "standard": ("addStandardJob-9.lua", ("wait", "paused", "meta", "id", "completed", "delayed", "active", "events", "marker")),
    "prioritized": ("addPrioritizedJob-9.lua", ("marker", "meta", "id", "prioritized", "delayed", "completed", "active", "events", "pc")),
    "delayed": ("addDelayedJob-6.lua", ("marker", "meta", "id", "delayed", "completed", "events")),
}
# BullMQ's bound on a priority (1 is the highest; 0 = none).
MAX_PRIORITY = 2 ** 21


def add_kind(opts):
    """Which add script BullMQ's Queue.add would run for these job options."""
    if opts.get("delay", 0) > 0:
        return "delayed"
    if opts.get("priority", 0):
        return "prioritized"
    return "standard"


def load_script(commands_dir, name="addStandardJob-9.lua"):
    """The script with its ``--- @include`` lines expanded: depth first, each file once, as
    BullMQ's build does (an include names a file relative to the including one, without .lua)."""
    seen = set()

    def expand(path):
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = INCLUDE.match(line)
                if m is None:
                    out.append(line)
                    continue
                target = os.path.normpath(os.path.join(os.path.dirname(path), m.group(1) + ".lua"))
                if target not in seen:
                    seen.add(target)
                    out.append(expand(target))
        return "".join(out)

    return expand(os.path.join(commands_dir, name))


def schema_errors(schema, data):
    """Each way `data` fails the schema, as `path: message`, most specific first."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (-len(e.absolute_path), list(map(str, e.absolute_path))))
    out = []
    for e in errors:
        # An if/then failure is reported by its nested errors (the lens's params); the wrapper adds nothing.
        for leaf in (e.context or [e]):
            path = ".".join(str(p) for p in leaf.absolute_path) or "(root)"
            out.append("%s: %s" % (path, leaf.message))
    return out


def add_job(client, scripts, queue, prefix, name, data, opts, job_id=""):
    """Run BullMQ's add script for `opts`: returns the job id (the existing one when `job_id` is already in Redis)."""
    kind = add_kind(opts)
    key_prefix = "%s:%s:" % (prefix, queue)
    keys = [key_prefix + k for k in ADD_SCRIPTS[kind][1]]
    timestamp = int(time.time() * 1000)
    # [key prefix, custom id, name, timestamp, parentKey, parent dependencies key, parent, repeat job key, deduplication key]
    args = msgpack.packb([key_prefix, job_id, name, timestamp, None, None, None, None, None], use_bin_type=True)
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    result = client.eval(scripts[kind], len(keys), *keys, args, encoded, msgpack.packb(opts, use_bin_type=True))
    if isinstance(result, int) and result < 0:
        raise RuntimeError("%s returned %d" % (ADD_SCRIPTS[kind][0], result))
    return result.decode() if isinstance(result, bytes) else str(result)


def canonical(value):
    """JSON text of a value with object keys sorted: params compare as values, key order aside."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def same_request(client, queue, prefix, job_id, data):
    """Whether the job stored under `job_id` is this request (lens and params; the token may differ)."""
    stored = client.hget("%s:%s:%s" % (prefix, queue, job_id), "data")
    if stored is None:
        return True  # gone already (kept no longer): nothing to compare with
    kept = json.loads(stored)
    return kept.get("lens") == data["lens"] and canonical(kept.get("params")) == canonical(data["params"])


def main(argv=None):
    p = argparse.ArgumentParser(description="Add a lens job to a lensfleet queue (BullMQ's addStandardJob).")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    p.add_argument("--queue", help="the workers' LENSFLEET_QUEUE (default: the schema's x-lensfleet.queue)")
    p.add_argument("--prefix", help="BullMQ key prefix (default: the schema's x-lensfleet.prefix, bull; on a Redis Cluster {<queue>})")
    p.add_argument("--tenant", required=True)
    p.add_argument("--lens", required=True)
    p.add_argument("--params", default="{}", help="JSON object")
    p.add_argument("--jwt-env", help="name of an environment variable holding the user's token (never a flag: it would show in ps)")
    p.add_argument("--idempotency-key", help="add at most once: job id idem-<tenant>-<key>")
    p.add_argument("--priority", type=int, help="1 (highest) to %d; jobs with a priority run before those without, lower first" % MAX_PRIORITY)
    p.add_argument("--delay-ms", type=int, help="run no sooner than this many milliseconds from now")
    p.add_argument("--schema", default=DEFAULT_SCHEMA)
    p.add_argument("--bullmq-commands", default=DEFAULT_COMMANDS, help="bullmq's Lua commands folder")
    p.add_argument("--print-script", action="store_true", help="print the expanded addStandardJob script and exit")
    a = p.parse_args(argv)

    if a.print_script:
        sys.stdout.write(load_script(a.bullmq_commands))
        return 0
    if a.priority is not None and not 1 <= a.priority <= MAX_PRIORITY:
        print("invalid job: --priority must be 1 to %d" % MAX_PRIORITY, file=sys.stderr)
        return 2
    if a.delay_ms is not None and a.delay_ms < 0:
        print("invalid job: --delay-ms must be 0 or more", file=sys.stderr)
        return 2

    with open(a.schema, encoding="utf-8") as f:
        schema = json.load(f)
    contract = schema.get("x-lensfleet", {})
    try:
        params = json.loads(a.params)
    except ValueError as e:
        print("--params is not JSON: %s" % e, file=sys.stderr)
        return 2
    data = {"v": 1, "tenant": a.tenant, "lens": a.lens, "params": params}
    if a.jwt_env:
        data["auth"] = {"jwt": os.environ.get(a.jwt_env, "")}

    errors = schema_errors(schema, data)
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    limit = contract.get("maxPayloadBytes")
    if limit is not None and size > limit:
        errors.append("(root): job data is %d bytes, more than the limit of %d" % (size, limit))
    if errors:
        for e in errors:
            print("invalid job: %s" % e, file=sys.stderr)
        return 2

    job_id = ""
    if a.idempotency_key is not None:
        if not IDEMPOTENCY_KEY.match(a.idempotency_key):
            print("invalid job: --idempotency-key must match %s" % IDEMPOTENCY_KEY.pattern, file=sys.stderr)
            return 2
        job_id = "idem-%s-%s" % (a.tenant, a.idempotency_key)

    opts = dict(contract.get("jobOptions", {}))
    if a.priority is not None:
        opts["priority"] = a.priority
    if a.delay_ms:
        opts["delay"] = a.delay_ms
    kind = add_kind(opts)
    scripts = {kind: load_script(a.bullmq_commands, ADD_SCRIPTS[kind][0])}
    client = redis.Redis.from_url(a.redis)
    queue = a.queue or contract.get("queue", "lens-queries")
    prefix = a.prefix or contract.get("prefix", "bull")
    try:
        added = add_job(client, scripts, queue, prefix, a.lens, data, opts, job_id)
        if job_id and not same_request(client, queue, prefix, added, data):
            print("idempotency conflict: job %s already holds a different request (another lens or other params); nothing was added: give a new request a new key" % added, file=sys.stderr)
            return 3
        print(added)
    except (redis.RedisError, RuntimeError) as e:
        print("could not add the job: %s" % e, file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
