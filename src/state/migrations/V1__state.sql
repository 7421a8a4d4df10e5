-- pgwarden's own state, shared by every replica on this database (`serve --http --state-url`).
-- The agent's login must never reach this database: pgwarden refuses a state URL that is the
-- database it serves.

-- Approvals: one row each, moved only in transactions that also append its audit record.
CREATE TABLE pgwarden.approvals (
    id          text PRIMARY KEY,
    -- The requester: `principal:NAME` (verified) or an MCP session id.
    owner       text NOT NULL,
    action_hash text NOT NULL,
    -- The stored call: the tool call as given and the action it was judged as.
    call        jsonb NOT NULL,
    -- What the surfaces show: the packet, level, requester, reviewers, the card's nonce.
    review      jsonb NOT NULL,
    state       text NOT NULL CHECK (state IN
                  ('pending', 'approved', 'denied', 'expired', 'cancelled', 'executing', 'done', 'failed')),
    -- What was approved (dry run, row limit, reason), from `approved` on.
    approved    jsonb,
    -- A denial's or cancellation's reason.
    reason      text,
    -- Approvals so far, while `min_approvals` needs more.
    votes       jsonb NOT NULL DEFAULT '[]',
    -- What notifiers keep about it (a Slack message, webhook deliveries).
    notes       jsonb NOT NULL DEFAULT '{}',
    shown       boolean NOT NULL DEFAULT false,
    -- When `pending` or `approved` stops counting: compared with the database's clock in every
    -- statement that reads or moves an approval (expiry is decided in SQL, not by a sweep).
    deadline    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    seq         bigserial NOT NULL,
    -- The replica that claimed it to run.
    claimed_by  text
);
-- One pending approval per requester and action.
CREATE UNIQUE INDEX approvals_one_pending ON pgwarden.approvals (owner, action_hash) WHERE state = 'pending';
CREATE INDEX approvals_open ON pgwarden.approvals (deadline) WHERE state IN ('pending', 'approved');
CREATE INDEX approvals_newest ON pgwarden.approvals (seq DESC);

-- Single-use nonces of sealed 2026-07-28 `requestState`s, until they could no longer open anyway.
CREATE TABLE pgwarden.used_nonces (
    nonce text PRIMARY KEY,
    until timestamptz NOT NULL
);

-- The audit trail: one hash chain for all replicas, each line exactly as the file trail writes it.
CREATE TABLE pgwarden.audit (
    seq  bigint PRIMARY KEY,
    hash text NOT NULL,
    line text NOT NULL
);

-- The head of the chain (locked by every append: sequence and previous hash are assigned under
-- it) and the signed checkpoint of that head. seq -1: nothing written yet.
CREATE TABLE pgwarden.audit_head (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq        bigint NOT NULL,
    hash       text NOT NULL,
    checkpoint text
);
INSERT INTO pgwarden.audit_head (seq, hash) VALUES (-1, '');
