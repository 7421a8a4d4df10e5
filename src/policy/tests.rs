use super::*;
use crate::classify::classify;

const POLICY: &str = r#"
[defaults]
max_rows = 100
statement_timeout = "10s"

[tables."public.customers"]
tags = ["pii", "gdpr"]

[tables."finance.*"]
tags = ["finance"]

[tables."public.scratch_*"]
tags = ["scratch"]

[columns."public.customers.email"]
mask = "email"

[[rule]]
id = "canary-frozen"
effect = "deny"
tools = ["query"]
categories = ["write", "destructive", "ddl"]
tables = ["public.canary", "finance.*"]
reason = "the canary table and finance are frozen"

[[rule]]
id = "admin-denied"
effect = "deny"
categories = ["admin"]

[[rule]]
id = "ci-may-not-touch-pii"
effect = "deny"
tags = ["pii"]
principals = ["ci-*"]

[[rule]]
id = "scratch-writes-run"
effect = "allow"
categories = ["write", "ddl"]
tags = ["scratch"]
max_rows = 5
max_result_bytes = "64KiB"

[[rule]]
id = "pii-reads-need-approval"
effect = "approve"
categories = ["read"]
tags = ["pii"]
approval_timeout = "15m"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]
statement_timeout = "2s"

[[rule]]
id = "critical-needs-approval"
effect = "approve"
risk_at_least = "critical"

[[rule]]
id = "alice-writes"
effect = "approve"
categories = ["write"]
principals = ["alice"]
"#;

fn decide(policy: &Policy, tool: &str, sql: &str, principal: Option<&str>) -> Decision {
    let assessment = classify(sql);
    policy.evaluate(&Request {
        tool: Tool::from_name(tool).unwrap(),
        assessment: &assessment,
        principal,
        groups: &[],
    })
}

/// Rules with `groups` match a caller in any listed group (globs), never a caller without groups,
/// and combine with `principals` as every other condition does: all must hold.
#[test]
fn groups_rules_match_a_callers_verified_groups() {
    let p = Policy::parse(
        "g.toml",
        r#"
[[rule]]
id = "contractors-never-write"
effect = "deny"
categories = ["write", "ddl", "destructive"]
groups = ["contractors", "ext-*"]

[[rule]]
id = "dba-alice-ddl"
effect = "approve"
categories = ["ddl", "destructive"]
principals = ["alice"]
groups = ["dba"]

[[rule]]
id = "dba-writes"
effect = "allow"
categories = ["write"]
groups = ["dba"]

[[rule]]
id = "reads"
effect = "allow"
categories = ["read"]
"#,
    )
    .unwrap();
    let decide = |sql: &str, principal: Option<&str>, groups: &[&str]| {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let assessment = classify(sql);
        let d = p.evaluate(&Request {
            tool: Tool::Query,
            assessment: &assessment,
            principal,
            groups: &groups,
        });
        (d.effect, d.rule)
    };
    let update = "UPDATE orders SET x = 1 WHERE id = 2";
    let drop = "DROP TABLE orders";
    let some = |r: &str| Some(r.to_string());
    assert_eq!(
        decide(update, Some("bob"), &["dba"]),
        (Effect::Allow, some("dba-writes"))
    );
    assert_eq!(
        decide(update, Some("bob"), &["analysts", "dba"]),
        (Effect::Allow, some("dba-writes"))
    );
    assert_eq!(
        decide(update, Some("bob"), &["dba", "ext-acme"]),
        (Effect::Deny, some("contractors-never-write"))
    );
    assert_eq!(
        decide(update, Some("bob"), &["contractors"]),
        (Effect::Deny, some("contractors-never-write"))
    );
    assert_eq!(
        decide(update, Some("bob"), &[]),
        (Effect::Deny, None),
        "no groups, no group rule"
    );
    assert_eq!(
        decide(update, None, &["DBA"]),
        (Effect::Deny, None),
        "group names are exact"
    );
    assert_eq!(
        decide(drop, Some("alice"), &["dba"]),
        (Effect::Approve, some("dba-alice-ddl"))
    );
    assert_eq!(
        decide(drop, Some("alice"), &["analysts"]),
        (Effect::Deny, None),
        "both conditions hold"
    );
    assert_eq!(
        decide(drop, Some("bob"), &["dba"]),
        (Effect::Deny, None),
        "both conditions hold"
    );
    assert_eq!(decide("SELECT 1", None, &[]), (Effect::Allow, some("reads")));
}

#[test]
fn the_first_matching_rule_decides_and_no_match_denies() {
    let p = Policy::parse("t.toml", POLICY).unwrap();
    /// tool, sql, principal → effect, deciding rule
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Effect, Option<&'a str>);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // tool, sql, principal → effect, deciding rule
        ("query", "SELECT * FROM orders", None, Effect::Allow, Some("reads-run")),
        ("query", "UPDATE canary SET x = 1 WHERE id = 2", None, Effect::Deny, Some("canary-frozen")),
        ("query", "DROP TABLE finance.ledger", None, Effect::Deny, Some("canary-frozen")),
        // One hit is enough for a deny rule: a harmless extra table does not dodge it.
        ("query", "UPDATE public.orders o SET x = 1 FROM canary c WHERE c.id = o.id", None, Effect::Deny, Some("canary-frozen")),
        // …and a CTE that shares the table's name does not hide the DELETE target.
        ("query", "WITH canary AS (DELETE FROM canary WHERE id = 1 RETURNING *) SELECT * FROM canary", None, Effect::Deny, Some("canary-frozen")),
        // `tools` must match: the same write through another tool is not this rule's business.
        ("export", "UPDATE canary SET x = 1 WHERE id = 2", None, Effect::Deny, None),
        ("query", "SET work_mem = '1GB'", None, Effect::Deny, Some("admin-denied")),
        ("query", "SELECT * FROM customers", Some("ci-nightly"), Effect::Deny, Some("ci-may-not-touch-pii")),
        ("query", "SELECT * FROM customers", Some("bob"), Effect::Approve, Some("pii-reads-need-approval")),
        // A principals rule never matches an anonymous caller.
        ("query", "SELECT * FROM customers", None, Effect::Approve, Some("pii-reads-need-approval")),
        // Tags come from patterns too, and an allow rule must cover every table touched.
        ("query", "INSERT INTO scratch_a VALUES (1)", None, Effect::Allow, Some("scratch-writes-run")),
        ("query", "INSERT INTO scratch_a SELECT * FROM orders", None, Effect::Deny, None),
        ("query", "INSERT INTO scratch_a SELECT * FROM scratch_b", None, Effect::Allow, Some("scratch-writes-run")),
        // An allow rule must cover every category: a hidden DELETE in a read is not a read.
        ("query", "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d", Some("alice"), Effect::Approve, Some("alice-writes")),
        ("query", "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d", None, Effect::Deny, None),
        // Reading is part of a write: `write` covers an UPDATE that reads another table.
        ("query", "UPDATE scratch_a SET x = o.x FROM scratch_b o WHERE o.id = scratch_a.id", None, Effect::Allow, Some("scratch-writes-run")),
        ("query", "TRUNCATE orders", None, Effect::Approve, Some("critical-needs-approval")),
        ("query", "GRANT ALL ON orders TO PUBLIC", None, Effect::Approve, Some("critical-needs-approval")),
        ("query", "UPDATE orders SET x = 1 WHERE id = 2", Some("alice"), Effect::Approve, Some("alice-writes")),
        ("query", "UPDATE orders SET x = 1 WHERE id = 2", Some("bob"), Effect::Deny, None),
        ("query", "SELEC oops", None, Effect::Deny, None),
    ];
    for (tool, sql, principal, effect, rule) in cases {
        let d = decide(&p, tool, sql, *principal);
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (*effect, *rule),
            "{tool} `{sql}` as {principal:?}: {}",
            d.reason
        );
    }
}

#[test]
fn decisions_carry_limits_tags_masks_and_a_reason() {
    let p = Policy::parse("t.toml", POLICY).unwrap();
    let d = decide(&p, "query", "SELECT * FROM orders", None);
    assert_eq!(d.max_rows, Some(100), "from [defaults]");
    assert_eq!(d.max_result_bytes, None, "the server's setting");
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(2)), "the rule's own");
    assert_eq!(d.approval_timeout, DEFAULT_APPROVAL_TIMEOUT);
    assert!(d.reason.contains("reads-run"), "{}", d.reason);

    let d = decide(&p, "query", "INSERT INTO scratch_a VALUES (1)", None);
    assert_eq!(d.max_rows, Some(5));
    assert_eq!(d.max_result_bytes, Some(64 << 10));
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(10)));

    let d = decide(&p, "query", "SELECT c.email FROM customers c", None);
    assert_eq!(d.approval_timeout, Duration::from_secs(900));
    assert_eq!(d.tags["public.customers"], vec!["gdpr", "pii"]);
    assert_eq!(
        d.masks,
        vec![MaskedColumn {
            column: "public.customers.email".into(),
            mask: Mask::Email
        }]
    );

    let d = decide(&p, "query", "UPDATE canary SET x = 1 WHERE id = 2", None);
    assert_eq!(d.reason, "the canary table and finance are frozen");
    assert_eq!(d.rule_label(), "rule `canary-frozen` (t.toml:19)");
    let d = decide(&p, "query", "SELEC oops", None);
    assert_eq!(d.rule_label(), "no policy rule");
}

#[test]
fn shipped_policies_load_and_say_what_the_readme_says() {
    for (name, text) in [
        ("default.toml", DEFAULT_POLICY),
        ("readonly.toml", include_str!("../../tool-policies/readonly.toml")),
        ("sandbox.toml", include_str!("../../tool-policies/sandbox.toml")),
    ] {
        Policy::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let default = Policy::builtin();
    #[rustfmt::skip]
    let cases = [
        ("SELECT * FROM orders", Effect::Allow),
        ("UPDATE orders SET x = 1 WHERE id = 1", Effect::Approve),
        ("CREATE TABLE t (x int)", Effect::Approve),
        ("DROP TABLE orders", Effect::Approve),
        ("GRANT SELECT ON orders TO bob", Effect::Approve),
        ("COPY orders TO STDOUT", Effect::Approve),
        ("SELEC 1", Effect::Approve),
        ("VACUUM orders", Effect::Deny),
        ("SET search_path = evil", Effect::Deny),
    ];
    for (sql, effect) in cases {
        assert_eq!(decide(&default, "query", sql, None).effect, effect, "default: {sql}");
    }
    let readonly = Policy::parse("readonly.toml", include_str!("../../tool-policies/readonly.toml")).unwrap();
    for (sql, effect) in cases {
        let want = if effect == Effect::Allow {
            Effect::Allow
        } else {
            Effect::Deny
        };
        assert_eq!(decide(&readonly, "query", sql, None).effect, want, "readonly: {sql}");
    }
    let sandbox = Policy::parse("sandbox.toml", include_str!("../../tool-policies/sandbox.toml")).unwrap();
    let d = decide(&sandbox, "query", "DELETE FROM customers", None);
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (Effect::Deny, Some("customers-are-never-destroyed"))
    );
    let d = decide(&sandbox, "query", "SELECT * FROM analytics.monthly_revenue", None);
    assert_eq!((d.rule.as_deref(), d.max_rows), (Some("reporting-reads"), Some(1000)));
    let d = decide(
        &sandbox,
        "query",
        "UPDATE orders SET status = 'x' WHERE id = 1",
        Some("finance-bot"),
    );
    assert_eq!(d.rule.as_deref(), Some("finance-team-changes-orders"));
}

/// Each bad file gives exactly this error (file:line and message).
#[test]
fn every_bad_file_is_refused_with_its_line_and_the_fix() {
    let ok_rule = "[[rule]]\nid = \"r\"\neffect = \"allow\"\ncategories = [\"read\"]\n";
    #[rustfmt::skip]
    let cases: Vec<(String, &str)> = vec![
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\ncategoriez = [\"read\"]\n".into(),
         "`bad.toml:4`: unknown key `categoriez`; expected one of `id`, `effect`, `reason`, `tools`, `categories`, `tables`, `tags`, `risk_at_least`, `principals`, `groups`, `databases`, `max_rows`, `max_result_bytes`, `statement_timeout`, `approval_timeout`, `min_channel`, `reviewers`, `min_approvals`, `notify`"),
        ("[[rule]]\nid = \"a\"\neffect = \"alow\"\n".into(),
         "`bad.toml:3`: unknown value `alow`; expected one of `allow`, `approve`, `deny`"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\ncategories = [\"reads\"]\n".into(),
         "`bad.toml:4`: unknown value `reads`; expected one of `read`, `write`, `export`, `ddl`, `admin`, `unknown`, `destructive`, `privilege`"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nrisk_at_least = \"severe\"\n".into(),
         "`bad.toml:4`: unknown value `severe`; expected one of `low`, `medium`, `high`, `critical`"),
        ("[[rule]]\neffect = \"allow\"\n".into(),
         "`bad.toml:1`: missing key `id`"),
        ("[[rule]]\nid = \"a\"\n".into(),
         "`bad.toml:1`: missing key `effect`"),
        (format!("{ok_rule}[[rule]]\nid = \"r\"\neffect = \"deny\"\ntools = [\"query\"]\n"),
         "`bad.toml:6`: rule id `r` is already used at `bad.toml:2`; ids must be unique"),
        (format!("[[rule]]\nid = \"all\"\neffect = \"approve\"\n{ok_rule}"),
         "`bad.toml:5`: rule `r` can never match: rule `all` at `bad.toml:2` comes first and matches every call it would; move `r` above it or narrow `all`"),
        ("[[rule]]\nid = \"w\"\neffect = \"deny\"\ncategories = [\"write\", \"read\"]\n[[rule]]\nid = \"r\"\neffect = \"allow\"\ncategories = [\"read\"]\n".into(),
         "`bad.toml:6`: rule `r` can never match: rule `w` at `bad.toml:2` comes first and matches every call it would; move `r` above it or narrow `w`"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\ntools = [\"sql\"]\n".into(),
         "`bad.toml:4`: rule `a`: unknown tool `sql`; expected one of `query`, `export`, `grant`, `list_tables`, `describe_table`"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\ntables = [\"customers\"]\n".into(),
         "`bad.toml:4`: rule `a`: table `customers`: write `schema.table`, e.g. `public.customers`, `finance.*` or `*`"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ntools = []\n".into(),
         "`bad.toml:4`: rule `a`: `tools = []` never matches anything; remove the key to match any tools"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ntags = [\"pi\"]\n[tables.\"public.c\"]\ntags = [\"pii\"]\n".into(),
         "`bad.toml:2`: rule `a` matches tag `pi`, but no `[tables.\"…\"]` entry carries it; tag a table or fix the spelling (known tags: `pii`)"),
        ("[[rule]]\nid = \"a b\"\neffect = \"deny\"\n".into(),
         "`bad.toml:2`: rule id `a b` must be a non-empty word without spaces, e.g. `reads-run`"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmax_rows = 0\n".into(),
         "`bad.toml:4`: `max_rows` must be a whole number from 1 to 4294967295 (got 0)"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmax_result_bytes = \"16MB\"\n".into(),
         "`bad.toml:4`: `max_result_bytes` must be bytes (`1048576`) or a size such as \"512KiB\" or \"16MiB\" (got \"16MB\")"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmax_result_bytes = 100\n".into(),
         "`bad.toml:4`: `max_result_bytes` must be at least 1KiB (got 100 bytes); write e.g. \"16MiB\""),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nstatement_timeout = \"soon\"\n".into(),
         "`bad.toml:4`: `statement_timeout` must be a duration such as \"15s\", \"500ms\" or \"5m\" (got `soon`)"),
        // Regression (issue 16 item 15): a duration the linter took panicked at run time.
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nstatement_timeout = \"18446744073709551615s\"\n".into(),
         "`bad.toml:4`: `statement_timeout` is 18446744073709551615s, longer than pgwarden allows (at most 24days); use a shorter duration"),
        (format!("{ok_rule}[approval]\npending_ttl = \"100years\"\n"),
         "`bad.toml:6`: `pending_ttl` is 100years, longer than pgwarden allows (at most 24days); use a shorter duration"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\nmax_rows = 5\n".into(),
         "`bad.toml:2`: rule `a` denies, so `max_rows`, `max_result_bytes` and `statement_timeout` have no effect; remove them"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\napproval_timeout = \"1m\"\n".into(),
         "`bad.toml:2`: rule `a` does not ask for approval, so `approval_timeout` has no effect; remove it"),
        (format!("{ok_rule}[defaults]\nmax_row = 5\n"),
         "`bad.toml:6`: unknown key `max_row`; expected one of `max_rows`, `max_result_bytes`, `statement_timeout`, `approval_timeout`"),
        (format!("{ok_rule}[tables.\"public.c\"]\ntags = []\n"),
         "`bad.toml:5`: table `public.c`: `tags` must be a non-empty list of words, e.g. `tags = [\"pii\"]`"),
        (format!("{ok_rule}[tables.\"c\"]\ntags = [\"x\"]\n"),
         "`bad.toml:5`: table `c`: write `schema.table`, e.g. `public.customers`, `finance.*` or `*`"),
        (format!("{ok_rule}[columns.\"public.c\"]\nmask = \"email\"\n"),
         "`bad.toml:5`: column `public.c`: write `schema.table.column` exactly, e.g. `public.customers.email` (no patterns), or `NAME:schema.table.column` for one database"),
        (format!("{ok_rule}[columns.\"public.c.email\"]\nmask = \"scramble\"\n"),
         "`bad.toml:6`: unknown value `scramble`; expected one of `email`, `redact`, `hash`, `last4`, `null`"),
        (format!("{ok_rule}[colums.\"public.c.email\"]\nmask = \"email\"\n"),
         "`bad.toml:5`: unknown key `colums`; expected one of `defaults`, `approval`, `rule`, `database_role`, `tables`, `columns`"),
        (format!("{ok_rule}[approval]\nwait_budget = \"10m\"\n"),
         "`bad.toml:5`: `approval.wait_budget` is 10m, longer than clients wait for a tool call (Claude Desktop gives up after about 60 s); use at most \"5m\", ideally \"40s\""),
        (format!("{ok_rule}[approval]\nchannels = []\n"),
         "`bad.toml:6`: `approval.channels = []` means no person can ever approve anything; list at least one of \"elicitation\", \"mcp_app\", \"console\", \"cli\", \"web\", \"api\", \"slack\" (or make the rules `deny`)"),
        (format!("{ok_rule}[approval]\nchannels = [\"email\"]\n"),
         "`bad.toml:6`: unknown value `email`; expected one of `elicitation`, `mcp_app`, `console`, `cli`, `web`, `api`, `slack`"),
        (format!("{ok_rule}[approval]\nchannels = [\"elicitation\"]\n"),
         "`bad.toml:5`: `approval.min_channel` asks for `local` approval for some risk, but the `console` and `cli` channels are off, so those calls could never be approved; enable \"console\" or \"cli\", or lower `min_channel` (the default is critical = \"local\")"),
        (format!("{ok_rule}[approval.min_channel]\ncritical = \"remote\"\n"),
         "`bad.toml:6`: unknown value `remote`; expected one of `client`, `local`, `team`"),
        (format!("{ok_rule}[approval]\ninstant_decline = \"10s\"\n"),
         "`bad.toml:5`: `approval.instant_decline` is 10s; a person can read and decline a prompt in that time, and their \"no\" would be taken as the client's. Use at most \"5s\" (default \"1s\", \"0s\" turns it off)"),
        (format!("{ok_rule}[approval]\ninstant_decline = \"soon\"\n"),
         "`bad.toml:6`: `instant_decline` must be a duration such as \"1s\", \"300ms\" or \"0s\" (got `soon`)"),
        (format!("{ok_rule}[approval]\nmax_open_per_session = 0\n"),
         "`bad.toml:6`: `approval.max_open_per_session` must be a whole number from 1 to 100 (got 0)"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmin_channel = \"local\"\n".into(),
         "`bad.toml:2`: rule `a` does not ask for approval, so `min_channel` has no effect; remove it"),
        ("[[rule]]\nid = \"a\"\neffect = \"approve\"\nreviewers = [\"bob\"]\nmin_approvals = 2\n".into(),
         "`bad.toml:5`: rule `a`: `min_approvals = 2` needs 2 different people, but `reviewers` names only 1; add reviewers or a `group:`"),
        ("[[rule]]\nid = \"a\"\neffect = \"approve\"\nreviewers = [\"group:\"]\n".into(),
         "`bad.toml:4`: rule `a`: `group:` needs a group name, e.g. `group:dba`"),
        ("[[rule]]\nid = \"a\"\neffect = \"approve\"\nnotify = [\"email:x\"]\n".into(),
         "`bad.toml:4`: rule `a`: `email:x` names no channel; write `slack:#channel`, `teams:NAME` or `webhook:NAME` (NAME as in the HTTP config)"),
        ("[[rule]]\nid = \"a\"\neffect = \"approve\"\nreviewers = [\"bob\"]\nmin_channel = \"local\"\n".into(),
         "`bad.toml:2`: rule `a` names `reviewers` (or `min_approvals` above 1), which only verified reviewers can satisfy, but sets `min_channel = \"local\"`; remove `min_channel` (it becomes \"team\")"),
        ("[[rule]]\nid = \"a\"\neffect = \"allow\"\nreviewers = [\"bob\"]\n".into(),
         "`bad.toml:2`: rule `a` does not ask for approval, so `reviewers`, `min_approvals` and `notify` have no effect; remove them"),
        ("[[rule]\nid = \"a\"\n".into(),
         "`bad.toml:1`: unclosed array table; expected `]`"),
        ("[defaults]\nmax_rows = 5\n".into(),
         "no `[[rule]]` in `bad.toml`; without rules every call is denied — add rules (see tool-policies/README.md)"),
    ];
    for (text, want) in cases {
        let err = Policy::parse("bad.toml", &text).expect_err(&text);
        assert_eq!(err.to_string(), want, "for:\n{text}");
    }
}

#[test]
fn a_directory_concatenates_files_in_name_order_and_names_each_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("20-rules.toml"),
        "[[rule]]\nid = \"all\"\neffect = \"approve\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("10-tags.toml"),
        "[tables.\"public.c\"]\ntags = [\"pii\"]\n[[rule]]\nid = \"pii\"\neffect = \"deny\"\ntags = [\"pii\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let p = Policy::load(dir.path()).unwrap();
    assert_eq!(
        p.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["pii", "all"]
    );
    assert!(p.rules[1].origin.file.ends_with("20-rules.toml"));

    std::fs::write(
        dir.path().join("30-dup.toml"),
        "[[rule]]\nid = \"pii\"\neffect = \"deny\"\n",
    )
    .unwrap();
    let err = Policy::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("30-dup.toml:2`: rule id `pii` is already used at `"),
        "{err}"
    );
    assert!(err.contains("10-tags.toml:4`"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = Policy::load(empty.path()).unwrap_err().to_string();
    assert!(err.starts_with("no `*.toml` files in the policy directory"), "{err}");
    let err = Policy::load(&dir.path().join("missing.toml")).unwrap_err().to_string();
    assert!(err.starts_with("cannot read the policy file"), "{err}");
}

#[test]
fn unreachable_detection_respects_each_effects_direction() {
    // An allow rule over `public.*` does not cover a deny rule on one table: the deny also fires
    // when a public table is joined with a table outside `public`.
    let ok = [
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\ntables = [\"public.*\"]\n[[rule]]\nid = \"d\"\neffect = \"deny\"\ntables = [\"public.t\"]\n",
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\nprincipals = [\"ci-*\"]\n[[rule]]\nid = \"b\"\neffect = \"deny\"\n",
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\ntables = [\"public.x*\"]\n[[rule]]\nid = \"b\"\neffect = \"deny\"\ntables = [\"public.*\"]\n",
        // A caller in `dba` and `ops` matches `b` but not `a`.
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\ngroups = [\"dba\"]\n[[rule]]\nid = \"b\"\neffect = \"deny\"\ngroups = [\"dba\", \"ops\"]\n",
    ];
    for text in ok {
        Policy::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let unreachable = [
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\ntables = [\"public.*\"]\n[[rule]]\nid = \"b\"\neffect = \"deny\"\ntables = [\"public.x*\"]\n",
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\nprincipals = [\"ci-*\"]\n[[rule]]\nid = \"b\"\neffect = \"allow\"\nprincipals = [\"ci-main\"]\n",
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\ngroups = [\"ext-*\", \"dba\"]\n[[rule]]\nid = \"b\"\neffect = \"allow\"\ngroups = [\"ext-acme\", \"dba\"]\n",
        "[[rule]]\nid = \"a\"\neffect = \"approve\"\nrisk_at_least = \"medium\"\n[[rule]]\nid = \"b\"\neffect = \"deny\"\nrisk_at_least = \"high\"\ntools = [\"query\"]\n",
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\ntables = [\"*\"]\n[[rule]]\nid = \"b\"\neffect = \"deny\"\ntables = [\"public.t\"]\n",
    ];
    for text in unreachable {
        let err = Policy::parse("t.toml", text).expect_err(text).to_string();
        assert!(err.contains("rule `b` can never match"), "{err}");
    }
}

#[test]
fn globs_match_any_run_of_characters() {
    for (pattern, text, want) in [
        ("finance.*", "finance.ledger", true),
        ("finance.*", "finances.ledger", false),
        ("*.audit_log", "ops.audit_log", true),
        ("ci-*", "ci-", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("*", "", true),
        ("public.t", "public.T", false),
    ] {
        assert_eq!(Glob(pattern.into()).matches(text), want, "{pattern} ~ {text}");
    }
}

#[test]
fn approval_settings_load_with_defaults_and_per_rule_minimum() {
    let p = Policy::parse(
        "a.toml",
        "[approval]\nwait_budget = \"2s\"\npending_ttl = \"1m\"\ninstant_decline = \"0s\"\nchannels = [\"console\"]\n\
         [approval.min_channel]\nhigh = \"local\"\n\
         [[rule]]\nid = \"w\"\neffect = \"approve\"\ncategories = [\"write\"]\nmin_channel = \"local\"\n",
    )
    .unwrap();
    let a = &p.approval;
    assert_eq!(a.wait_budget, std::time::Duration::from_secs(2));
    assert_eq!(a.pending_ttl, std::time::Duration::from_secs(60));
    assert_eq!(a.approved_ttl, std::time::Duration::from_secs(300), "default kept");
    assert_eq!(
        a.instant_decline,
        std::time::Duration::ZERO,
        "zero allowed: every decline is a person's"
    );
    assert!(a.enabled(Surface::Console) && !a.enabled(Surface::Elicitation));
    assert_eq!(a.level_for(Risk::High, None), Level::Local);
    assert_eq!(a.level_for(Risk::Critical, None), Level::Local, "default kept");
    assert_eq!(a.level_for(Risk::Low, None), Level::Client);
    let d = decide(&p, "query", "UPDATE t SET x = 1 WHERE id = 1", None);
    assert_eq!(
        a.level_for(Risk::Medium, d.min_channel),
        Level::Local,
        "the rule raises it"
    );
    let default = Policy::builtin().approval;
    assert_eq!(default, ApprovalSettings::default());
    assert_eq!(default.level_for(Risk::High, None), Level::Client);
    assert_eq!(default.level_for(Risk::Critical, None), Level::Local);
    assert_eq!(default.instant_decline, std::time::Duration::from_secs(1));
}

#[test]
fn the_longest_approval_wait_covers_every_rule_and_the_default() {
    let p = |text: &str| Policy::parse("w.toml", text).unwrap();
    let rule = "[[rule]]\nid = \"r\"\neffect = \"approve\"\n";
    assert_eq!(p(rule).longest_approval_wait(), DEFAULT_APPROVAL_TIMEOUT);
    let long = "[[rule]]\nid = \"s\"\neffect = \"approve\"\ntools = [\"grant\"]\napproval_timeout = \"3h\"\n\
                [[rule]]\nid = \"r\"\neffect = \"approve\"\napproval_timeout = \"1m\"\n";
    assert_eq!(
        p(long).longest_approval_wait(),
        std::time::Duration::from_secs(3 * 3600)
    );
    let defaults = format!("[defaults]\napproval_timeout = \"20m\"\n{rule}");
    assert_eq!(
        p(&defaults).longest_approval_wait(),
        std::time::Duration::from_secs(20 * 60)
    );
}

const TWO_DATABASES: &str = r#"
[tables."public.customers"]
tags = ["pii"]

[tables."prod:finance.*"]
tags = ["finance"]

[tables."staging:public.scratch_*"]
tags = ["scratch"]

[columns."public.customers.email"]
mask = "email"

[columns."prod:public.users.ssn"]
mask = "last4"

[columns."staging:public.users.ssn"]
mask = "null"

[[database_role]]
role = "prod_ro"
databases = ["prod"]

[[database_role]]
role = "anyone"

[[rule]]
id = "prod-finance-frozen"
effect = "deny"
tables = ["prod:finance.*"]

[[rule]]
id = "staging-scratch-writes"
effect = "allow"
categories = ["write"]
tables = ["staging:public.scratch_*", "public.tmp_*"]

[[rule]]
id = "only-staging-tables"
effect = "deny"
tables = ["staging:public.secrets"]

[[rule]]
id = "prod-writes-need-approval"
effect = "approve"
categories = ["write"]
databases = ["prod"]

[[rule]]
id = "reads"
effect = "allow"
categories = ["read"]
"#;

/// The projection keeps what names the database or no database, strips `NAME:` and drops the rest,
/// including a rule whose every table is another database's.
#[test]
fn for_database_projects_rules_tags_masks_and_roles() {
    let p = Policy::parse("two.toml", TWO_DATABASES).unwrap();
    let ids = |p: &Policy| p.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let tables = |p: &Policy, id: &str| {
        let rule = p.rules.iter().find(|r| r.id == id).unwrap();
        rule.tables.iter().flatten().map(|g| g.0.clone()).collect::<Vec<_>>()
    };
    let tagged = |p: &Policy| p.tables.iter().map(|t| t.pattern.0.clone()).collect::<Vec<_>>();
    let roles = |p: &Policy| p.roles.iter().map(|m| m.role.clone()).collect::<Vec<_>>();

    let prod = p.for_database("prod");
    assert_eq!(
        ids(&prod),
        [
            "prod-finance-frozen",
            "staging-scratch-writes",
            "prod-writes-need-approval",
            "reads"
        ]
    );
    assert_eq!(tables(&prod, "prod-finance-frozen"), ["finance.*"]);
    assert_eq!(
        tables(&prod, "staging-scratch-writes"),
        ["public.tmp_*"],
        "unprefixed kept, staging's dropped"
    );
    assert!(prod.rules.iter().all(|r| r.databases.is_none()));
    assert_eq!(tagged(&prod), ["public.customers", "finance.*"]);
    assert_eq!(prod.tags_of("finance.ledger"), BTreeSet::from(["finance"]));
    assert_eq!(prod.masks["public.users"]["ssn"], Mask::Last4);
    assert_eq!(prod.masks["public.customers"]["email"], Mask::Email);
    assert_eq!(prod.masks.len(), 2);
    assert_eq!(prod.mask_origins["public.users.ssn"].line, 14);
    assert_eq!(roles(&prod), ["prod_ro", "anyone"]);
    assert!(prod.roles.iter().all(|m| m.databases.is_none()));
    assert_eq!(prod.role_for(None, &[]), Some("prod_ro"));

    let staging = p.for_database("staging");
    assert_eq!(
        ids(&staging),
        ["staging-scratch-writes", "only-staging-tables", "reads"],
        "a rule whose tables are all another database's cannot match here, and `databases` filters"
    );
    assert_eq!(
        tables(&staging, "staging-scratch-writes"),
        ["public.scratch_*", "public.tmp_*"]
    );
    assert_eq!(tagged(&staging), ["public.customers", "public.scratch_*"]);
    assert_eq!(staging.masks["public.users"]["ssn"], Mask::Null);
    assert_eq!(roles(&staging), ["anyone"]);

    let other = p.for_database("analytics");
    assert_eq!(ids(&other), ["staging-scratch-writes", "reads"]);
    assert_eq!(tagged(&other), ["public.customers"]);
    assert_eq!(other.masks.keys().collect::<Vec<_>>(), ["public.customers"]);
    assert_eq!((other.sources.clone(), other.defaults), (p.sources.clone(), p.defaults));

    // And the projections decide as their database's rules say.
    let update = "UPDATE finance.ledger SET x = 1 WHERE id = 2";
    assert_eq!(
        decide(&prod, "query", update, None).rule.as_deref(),
        Some("prod-finance-frozen")
    );
    assert_eq!(decide(&staging, "query", update, None).effect, Effect::Deny);
    assert_eq!(decide(&staging, "query", update, None).rule, None);
    let scratch = "INSERT INTO scratch_a VALUES (1)";
    assert_eq!(decide(&staging, "query", scratch, None).effect, Effect::Allow);
    assert_eq!(decide(&prod, "query", scratch, None).effect, Effect::Approve);
}

#[test]
fn databases_named_lists_every_database_at_its_first_mention() {
    let p = Policy::parse("two.toml", TWO_DATABASES).unwrap();
    let named: Vec<(String, String)> = p
        .databases_named()
        .into_iter()
        .map(|(db, at)| (db, at.to_string()))
        .collect();
    assert_eq!(
        named,
        [
            ("prod".to_string(), "two.toml:5".to_string()),
            ("staging".into(), "two.toml:8".into())
        ]
    );
    let p = Policy::parse(
        "r.toml",
        "[[rule]]\nid = \"a\"\neffect = \"deny\"\ndatabases = [\"b1\"]\n\
         [[database_role]]\nrole = \"x\"\ndatabases = [\"b2\"]\n\
         [columns.\"b3:public.t.c\"]\nmask = \"null\"\n",
    )
    .unwrap();
    let named: Vec<String> = p
        .databases_named()
        .iter()
        .map(|(db, at)| format!("{db}@{at}"))
        .collect();
    assert_eq!(named, ["b1@r.toml:2", "b2@r.toml:6", "b3@r.toml:8"]);
    assert!(Policy::builtin().databases_named().is_empty());
}

#[test]
fn bad_database_names_and_prefixes_are_refused_with_their_line() {
    let ok_rule = "[[rule]]\nid = \"r\"\neffect = \"allow\"\ncategories = [\"read\"]\n";
    #[rustfmt::skip]
    let cases: Vec<(String, &str)> = vec![
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ndatabases = [\"prod\", \"st*\"]\n".into(),
         "`bad.toml:4`: rule `a`: database `st*` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `databases = [\"prod\"]`; remove the key to mean every database"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ndatabases = []\n".into(),
         "`bad.toml:4`: rule `a`: `databases = []` never matches anything; remove the key to match any databases"),
        (format!("{ok_rule}[[database_role]]\nrole = \"x\"\ndatabases = [\"\"]\n"),
         "`bad.toml:7`: database_role `x`: database `` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `databases = [\"prod\"]`; remove the key to mean every database"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ntables = [\"*:public.x\"]\n".into(),
         "`bad.toml:4`: rule `a`: table `*:public.x`: the database prefix `*` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `prod:public.users`; leave the prefix out to mean every database"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ntables = [\":public.x\"]\n".into(),
         "`bad.toml:4`: rule `a`: table `:public.x`: the database prefix before `:` is empty; write `NAME:schema.table`, e.g. `prod:public.users`, or drop the `:`"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ntables = [\"prod:users\"]\n".into(),
         "`bad.toml:4`: rule `a`: table `prod:users`: write `schema.table`, e.g. `public.customers`, `finance.*` or `*`"),
        (format!("{ok_rule}[tables.\"pr od:public.c\"]\ntags = [\"x\"]\n"),
         "`bad.toml:5`: table `pr od:public.c`: the database prefix `pr od` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `prod:public.users`; leave the prefix out to mean every database"),
        (format!("{ok_rule}[columns.\"p*:public.c.email\"]\nmask = \"email\"\n"),
         "`bad.toml:5`: column `p*:public.c.email`: the database prefix `p*` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `prod:public.users`; leave the prefix out to mean every database"),
        (format!("{ok_rule}[columns.\"prod:public.c\"]\nmask = \"email\"\n"),
         "`bad.toml:5`: column `prod:public.c`: write `schema.table.column` exactly, e.g. `public.customers.email` (no patterns), or `NAME:schema.table.column` for one database"),
        (format!("{ok_rule}[columns.\"public.c.email\"]\nmask = \"email\"\n[columns.\"prod:public.c.email\"]\nmask = \"hash\"\n"),
         "`bad.toml:7`: column `prod:public.c.email` is also masked as `public.c.email` at `bad.toml:5`, and a mask for every database and one for a single database cannot both hold; keep one"),
        ("[[rule]]\nid = \"a\"\neffect = \"deny\"\ndatabases = [\"prod\"]\ntables = [\"staging:public.x\"]\n".into(),
         "`bad.toml:2`: rule `a` can never match: it applies to databases `prod`, but every pattern in its `tables` names another database; fix `databases` or the `NAME:` prefixes"),
    ];
    for (text, want) in cases {
        let err = Policy::parse("bad.toml", &text).expect_err(&text);
        assert_eq!(err.to_string(), want, "for:\n{text}");
    }
    // Two databases may each mask the same column their own way, and a colon inside a quoted
    // table name is still a table name.
    Policy::parse(
        "ok.toml",
        &format!(
            "{ok_rule}[columns.\"prod:public.c.email\"]\nmask = \"email\"\n[columns.\"staging:public.c.email\"]\nmask = \"hash\"\n\
             [tables.\"public.a:b\"]\ntags = [\"odd\"]\n"
        ),
    )
    .unwrap();
}

#[test]
fn an_earlier_rule_limited_to_databases_covers_only_rules_within_them() {
    let rule = |id: &str, extra: &str| format!("[[rule]]\nid = \"{id}\"\neffect = \"deny\"\n{extra}");
    let ok = [
        // `b` also applies to staging, where `a` does not.
        rule("a", "databases = [\"prod\"]\n") + &rule("b", "tools = [\"query\"]\n"),
        rule("a", "databases = [\"prod\"]\n") + &rule("b", "databases = [\"prod\", \"staging\"]\n"),
        rule("a", "tables = [\"prod:public.*\"]\n") + &rule("b", "tables = [\"public.x\"]\n"),
        rule("a", "tables = [\"prod:public.*\"]\n") + &rule("b", "tables = [\"staging:public.x\"]\n"),
        rule("a", "databases = [\"prod\"]\n") + &rule("b", "tables = [\"staging:public.x\"]\n"),
        // `pr*.x` would match the text `prod:sales.x`, but not `sales.x` as prod sees it.
        rule("a", "tables = [\"pr*.x\"]\n") + &rule("b", "tables = [\"prod:sales.x\"]\n"),
    ];
    for text in &ok {
        Policy::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let unreachable = [
        rule("a", "databases = [\"prod\", \"staging\"]\n") + &rule("b", "databases = [\"prod\"]\n"),
        rule("a", "databases = [\"prod\"]\n") + &rule("b", "tables = [\"prod:public.x\"]\n"),
        rule("a", "tables = [\"public.*\"]\n") + &rule("b", "tables = [\"prod:public.x\"]\n"),
        rule("a", "tables = [\"prod:public.*\"]\n") + &rule("b", "tables = [\"prod:public.x\"]\n"),
        rule("a", "tables = [\"*\"]\n") + &rule("b", "databases = [\"prod\"]\ntables = [\"prod:public.x\"]\n"),
    ];
    for text in &unreachable {
        let err = Policy::parse("t.toml", text).expect_err(text).to_string();
        assert!(err.contains("rule `b` can never match"), "{err}");
    }
}

/// A table masked partly for every database and partly for one keeps both masks there: the
/// projection merges them (it once kept only one key's columns).
#[test]
fn masks_for_one_database_and_for_all_merge_on_one_table() {
    let p = Policy::parse(
        "m.toml",
        r#"
[[rule]]
id = "reads"
effect = "allow"
categories = ["read"]

[columns."prod:public.customers.phone"]
mask = "last4"

[columns."public.customers.email"]
mask = "email"
"#,
    )
    .unwrap();
    let prod = p.for_database("prod");
    let cols: Vec<&String> = prod.masks["public.customers"].keys().collect();
    assert_eq!(cols, ["email", "phone"]);
    let other = p.for_database("staging");
    let cols: Vec<&String> = other.masks["public.customers"].keys().collect();
    assert_eq!(cols, ["email"]);
}
