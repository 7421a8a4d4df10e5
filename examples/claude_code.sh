#!/bin/sh
# Register pgwarden with Claude Code (stdio). Without DATABASE_URL it serves its own sandbox.
claude mcp add pgwarden -- ~/.cargo/bin/pgwarden serve
# Against a real database (the URL stays in Claude Code's config, not in your shell history if you
# export it first):
#   claude mcp add pgwarden --env DATABASE_URL="$DATABASE_URL" -- ~/.cargo/bin/pgwarden serve
