#!/usr/bin/env python3
"""What output-schema validation costs a Python MCP client on a 1,000-row read (issue 17 item 4).

Starts `pgwarden serve` on a throwaway sandbox, calls `query` for 1,000 rows through the official
Python SDK (`pip install mcp`), alternating calls with the SDK's validation of `structuredContent`
against `outputSchema` on and off, and prints both medians and their ratio from this one run.

    cargo build --release && python3 benches/sdk_validation.py [--binary target/release/pgwarden]

The ratio was 100 ms / 15 ms (6.7x) with the per-cell type union pgwarden used to declare on `rows`,
and 1.6x with `items: {"type": "array"}`; `rows` is now one `array`, checked once.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SQL = "SELECT g AS id, 'row ' || g AS label, g * 1.5 AS amount, g % 2 = 0 AS even, now() AS at FROM generate_series(1, 1000) g"


async def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(here, "..", "target", "release", "pgwarden"))
    parser.add_argument("--rounds", type=int, default=30, help="calls per mode (default 30)")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        print(f"no pgwarden binary at {args.binary}; run `cargo build --release` first", file=sys.stderr)
        return 2

    sandbox = tempfile.mkdtemp(prefix="pgwarden-sdk-bench-")
    os.chmod(sandbox, 0o755)  # as root, the cluster runs as `postgres` and must reach it
    trail = tempfile.mkdtemp(prefix="pgwarden-sdk-bench-audit-")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    params = StdioServerParameters(
        command=args.binary,
        args=["serve", "--sandbox-dir", sandbox, "--audit-log", os.path.join(trail, "audit.jsonl")],
        env=env,
    )
    try:
        async with stdio_client(params, errlog=open(os.devnull, "w")) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await session.list_tools()  # the SDK caches output schemas from the listing

                async def call(validate: bool) -> float:
                    validated = session.validate_tool_result
                    if not validate:
                        async def skip(name, result):
                            return None
                        session.validate_tool_result = skip
                    try:
                        start = time.perf_counter()
                        r = await session.call_tool("query", {"sql": SQL, "max_rows": 1000})
                        elapsed = time.perf_counter() - start
                    finally:
                        session.validate_tool_result = validated
                    if r.is_error or r.structured_content["row_count"] != 1000:
                        raise RuntimeError(f"unexpected result: {str(r)[:300]}")
                    return elapsed

                for _ in range(3):  # warm up both paths (and the SDK's compiled validator)
                    await call(True)
                    await call(False)
                on, off = [], []
                for _ in range(args.rounds):
                    on.append(await call(True))
                    off.append(await call(False))
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
        shutil.rmtree(trail, ignore_errors=True)

    with_v, without_v = statistics.median(on), statistics.median(off)
    print(f"1,000-row query through the Python SDK, median of {args.rounds} calls each:")
    print(f"  with output-schema validation    {with_v * 1000:7.1f} ms")
    print(f"  without validation               {without_v * 1000:7.1f} ms")
    print(f"  ratio                            {with_v / without_v:7.2f}x (target: within 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
