//! Every database one pgwarden serves, each behind its own [`Pipeline`] (its pool, limits, policy
//! as that database sees it, catalog facts), and the one entry point that sends a call to the
//! pipeline of the database it names. A database that cannot be opened — unreachable, or not set up
//! for the policy's masks — fails only its own calls, with its name and why, and is tried again on
//! its next call and every [`RETRY_EVERY`] until it opens.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Pipeline, ToolError, step::Control};
use crate::{
    approval::{Route, hub::Approvals},
    audit::sink::{AuditSink, Durability},
    call::Caller,
    config::Limits,
    db::{Database, DbError, Logins, Target, catalog::DatabaseInfo, connect::source_chain},
    policy::Policy,
    text::quoted,
    tools::{ToolCall, ToolOutput},
    trail::Trail,
};

/// A database that failed to open is tried again by the next call after this long (sooner calls
/// get the same answer at once), and in the background this often.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The longest one attempt to open a database may take (connecting, reading its facts and catalog,
/// checking its masks): a server that logs in and then never answers fails it instead of holding
/// the database's calls.
pub const OPEN_WITHIN: Duration = Duration::from_secs(20);

/// How long the start waits for databases to open when serving several; those still opening go on
/// in the background and their calls wait for them (at most [`OPEN_WITHIN`]).
pub const START_WAIT: Duration = Duration::from_secs(5);

/// How to open one database.
pub struct Opening {
    /// Its `pgwarden.toml` name (with one database: what Postgres calls it).
    pub name: String,
    pub target: Target,
    pub change: Option<Target>,
    pub pool_size: usize,
    pub limits: Limits,
    /// The policy as this database sees it ([`Policy::for_database`]).
    pub policy: Arc<Policy>,
    /// It is pgwarden's demo sandbox: say so to the model.
    pub sandbox: bool,
}

/// What every database's pipeline shares.
pub struct Shared {
    pub audit: Arc<dyn AuditSink>,
    pub approvals: Arc<Approvals>,
    pub export_dir: PathBuf,
    /// The whole policy, every database's rules.
    pub policy: Arc<Policy>,
    /// The state database (`--state-url`), which no agent session may see.
    pub state: Option<String>,
    /// Stops the catalog watchers and the retries.
    pub stop: CancellationToken,
}

struct Slot {
    name: String,
    /// How to open it; none for a pipeline given open ([`Databases::one`]).
    opening: Option<Opening>,
    up: RwLock<Option<Arc<Pipeline>>>,
    /// One attempt at a time, and the last failure with when it happened.
    tried: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// Who its logins are, once it opened (or while it is opening).
    logins: std::sync::Mutex<Option<Logins>>,
}

impl Slot {
    fn ready(&self) -> Option<Arc<Pipeline>> {
        self.up.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub struct Databases {
    slots: Vec<Slot>,
    shared: Shared,
    /// Held while a database compares its logins with the others' and claims them.
    claiming: tokio::sync::Mutex<()>,
    /// Declared in a `pgwarden.toml`: actions, packets, records and results name the database.
    several: bool,
    note: Option<String>,
}

impl Databases {
    /// The databases, none opened yet (see [`Databases::open_all`]). `several`: they come from a
    /// `pgwarden.toml` (even one), so everything names them.
    pub fn new(openings: Vec<Opening>, shared: Shared, several: bool) -> Arc<Databases> {
        let note = openings
            .iter()
            .any(|o| o.sandbox)
            .then(|| super::SANDBOX_NOTE.to_string());
        Arc::new(Databases {
            slots: openings
                .into_iter()
                .map(|opening| Slot {
                    name: opening.name.clone(),
                    opening: Some(opening),
                    up: RwLock::new(None),
                    tried: tokio::sync::Mutex::new(None),
                    logins: Default::default(),
                })
                .collect(),
            shared,
            claiming: Default::default(),
            several,
            note,
        })
    }

    /// One database whose pipeline is open already (its catalog loaded), named `name`.
    pub fn one(pipeline: Arc<Pipeline>, name: String, stop: CancellationToken) -> Arc<Databases> {
        let note = pipeline.database_note().map(str::to_string);
        Arc::new(Databases {
            shared: Shared {
                audit: pipeline.audit().clone(),
                approvals: pipeline.approvals().clone(),
                export_dir: PathBuf::new(),
                policy: pipeline.policy().clone(),
                state: None,
                stop,
            },
            slots: vec![Slot {
                name,
                opening: None,
                up: RwLock::new(Some(pipeline)),
                tried: tokio::sync::Mutex::new(None),
                logins: Default::default(),
            }],
            claiming: Default::default(),
            several: false,
            note,
        })
    }

    /// Opens every database at once; each problem comes back with the database's name. With
    /// several, the start waits at most [`START_WAIT`]: a database still opening is reported as
    /// such and goes on opening. Those that failed are tried again in the background, each on its
    /// own, until they open (or `stop`).
    pub async fn open_all(self: &Arc<Self>) -> Vec<(String, String)> {
        let attempts: Vec<_> = (0..self.slots.len())
            .map(|i| {
                let me = self.clone();
                tokio::spawn(async move { me.bring_up(&me.slots[i], true).await.map(|_| ()) })
            })
            .collect();
        let deadline = self.several.then(|| Instant::now() + START_WAIT);
        let mut failed = Vec::new();
        for (slot, attempt) in self.slots.iter().zip(attempts) {
            let result = match deadline {
                Some(at) => match tokio::time::timeout_at(at, attempt).await {
                    Ok(done) => done,
                    Err(_) => {
                        failed.push((slot.name.clone(), "still opening; its calls wait for it".to_string()));
                        continue;
                    }
                },
                None => attempt.await,
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failed.push((slot.name.clone(), why)),
                Err(e) => failed.push((slot.name.clone(), format!("opening it failed ({e})"))),
            }
        }
        if !failed.is_empty() && self.several {
            self.retry_in_background();
        }
        failed
    }

    /// Every [`RETRY_EVERY`], opens each database that is not open (each on its own, none waiting
    /// for another), until all are open or `stop`.
    fn retry_in_background(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
                let Some(me) = me.upgrade() else { return };
                let down: Vec<&Slot> = me.slots.iter().filter(|s| s.ready().is_none()).collect();
                if down.is_empty() {
                    return;
                }
                let attempts = down.iter().map(|slot| async {
                    if me.bring_up(slot, true).await.is_ok() {
                        tracing::info!("database `{}` is available now", slot.name);
                    }
                });
                futures_util::future::join_all(attempts).await;
            }
        });
    }

    /// The database's pipeline, opening it if it is not open; `now` ignores the retry pause.
    async fn bring_up(&self, slot: &Slot, now: bool) -> Result<Arc<Pipeline>, String> {
        if let Some(p) = slot.ready() {
            return Ok(p);
        }
        let mut tried = slot.tried.lock().await;
        if let Some(p) = slot.ready() {
            return Ok(p);
        }
        if let Some((at, why)) = tried.as_ref()
            && !now
            && at.elapsed() < RETRY_EVERY
        {
            return Err(why.clone());
        }
        let Some(opening) = &slot.opening else {
            return Err("it was closed and cannot be opened again".into());
        };
        let opened = tokio::time::timeout(OPEN_WITHIN, self.open(slot, opening))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "it did not finish opening within {}s (connecting, reading its facts and catalog)",
                    OPEN_WITHIN.as_secs()
                ))
            });
        match opened {
            Ok(p) => {
                *slot.up.write().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
                *tried = None;
                Ok(p)
            }
            Err(why) => {
                *slot.logins.lock().unwrap_or_else(|p| p.into_inner()) = None;
                // With one database a failure at start stops pgwarden, which says why itself.
                if self.several && tried.as_ref().is_none_or(|(_, before)| *before != why) {
                    tracing::error!("database `{}`: {why}", slot.name);
                }
                *tried = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    /// Connects, checks and loads what the classifier needs: a pipeline that can serve.
    async fn open(&self, slot: &Slot, o: &Opening) -> Result<Arc<Pipeline>, String> {
        let db = Database::connect_with_change(o.target.clone(), o.change.clone(), o.pool_size)
            .await
            .map_err(|e| source_chain(&e))?;
        if self.several {
            self.claim_logins(slot, &db).await?;
        }
        let facts = db.facts().await.map_err(|e| format!("reading server facts: {e}"))?;
        tracing::info!(
            "database `{}`: using {} database {} (PostgreSQL {}, user {})",
            o.name,
            if o.sandbox { "the sandbox" } else { "the" },
            db.display,
            facts.version,
            facts.user
        );
        if facts.superuser {
            tracing::warn!(
                "database `{}`: connected as superuser `{}`: reads are still READ ONLY, but a least-privilege role is strongly recommended",
                o.name,
                facts.user
            );
        }
        if let Some(state) = &self.shared.state {
            // Whatever the URLs say, the agent's own session must not see pgwarden's tables.
            let agent = db
                .agent_client()
                .await
                .map_err(|e| format!("checking the state database is apart: {e}"))?;
            crate::state::check_unseen(&agent, state)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut pipeline = Pipeline::new(
            db,
            o.limits,
            o.policy.clone(),
            self.shared.audit.clone(),
            self.shared.approvals.clone(),
            self.shared.export_dir.clone(),
        )
        .named(self.several.then(|| o.name.clone()), facts.database);
        if o.sandbox {
            pipeline = pipeline.serving_sandbox();
        }
        let pipeline = Arc::new(pipeline);
        // The classifier judges agent SQL against what the catalog holds (user code, search path, masks).
        pipeline
            .refresh_catalog()
            .await
            .map_err(|e| format!("reading the catalog facts the classifier needs: {e}"))?;
        // With masks in the policy, serve only when Postgres enforces them for this login.
        if let Some(problem) = pipeline.masks_problem() {
            return Err(problem);
        }
        pipeline.watch_catalog(self.shared.stop.clone());
        Ok(pipeline)
    }

    /// Refuses a database whose logins are, or can become, a role another served database's logins
    /// are on the same cluster (however their URLs spell it); otherwise records its logins.
    async fn claim_logins(&self, slot: &Slot, db: &Database) -> Result<(), String> {
        let mine = db
            .logins()
            .await
            .map_err(|e| format!("reading who its logins are: {e}"))?;
        let _one_at_a_time = self.claiming.lock().await;
        for other in self.slots.iter().filter(|s| !std::ptr::eq(*s, slot)) {
            let theirs = other.logins.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(theirs) = theirs else { continue };
            if mine.cluster.is_none() || mine.cluster != theirs.cluster {
                continue;
            }
            if let Some(role) = mine.roles.intersection(&theirs.roles).next() {
                return Err(format!(
                    "its logins share the role `{role}` with database `{}` on the same cluster: roles, database \
                     settings and sessions belong to the whole cluster, so a call on one could change the other; give \
                     each database logins of its own (`pgwarden setup --agent-role …`), members of no role the other's are",
                    other.name
                ));
            }
        }
        *slot.logins.lock().unwrap_or_else(|p| p.into_inner()) = Some(mine);
        Ok(())
    }

    /// The database a call names (none: the first), or why not.
    fn pick(&self, asked: Option<&str>) -> Result<&Slot, ToolError> {
        let Some(name) = asked else {
            return self
                .slots
                .first()
                .ok_or_else(|| ToolError::Refused("pgwarden serves no database".into()));
        };
        if let Some(slot) = self.slots.iter().find(|s| s.name == name) {
            return Ok(slot);
        }
        let names = quoted(self.slots.iter().map(|s| &s.name));
        // The model's text, shown back: visible, and short.
        let name = crate::text::one_line(name, 80);
        Err(ToolError::BadArguments(if self.several {
            format!(
                "no database `{name}`; this pgwarden serves {} (the first is the default): pass one of them as \
                 `database`, or omit it",
                names
            )
        } else {
            format!(
                "no database `{name}`; this pgwarden serves one database, {}: omit `database`",
                names
            )
        }))
    }

    /// The one entry point for a tool call, first or replayed: on the database it names.
    pub async fn run(
        &self,
        call: &ToolCall,
        caller: Caller,
        route: &Route,
        ctl: &Control,
    ) -> Result<Outcome<ToolOutput>, ToolError> {
        let slot = match self.pick(call.database()) {
            Ok(slot) => slot,
            Err(e) => return self.refuse(call, caller, None, e).await,
        };
        let name = &slot.name;
        let pipeline = match self.bring_up(slot, false).await {
            Ok(p) => p,
            Err(why) => {
                let e = ToolError::Refused(format!(
                    "database `{name}` is unavailable ({}); pgwarden tries it again every few seconds",
                    why.lines().next().unwrap_or_default()
                ));
                return self.refuse(call, caller, Some(name), e).await;
            }
        };
        // The stored call of an approval names its database, so it replays there whatever the default.
        let named;
        let call = if self.several && call.database().is_none() {
            named = call.clone().on_database(Some(name.clone()));
            &named
        } else {
            call
        };
        match pipeline.run(call, caller, route, ctl).await {
            Ok(Outcome::Done(ToolOutput::ListTables(mut list))) if self.several => {
                list.database = Some(name.clone());
                list.databases = self.infos();
                Ok(Outcome::Done(ToolOutput::ListTables(list)))
            }
            Err(ToolError::Db(DbError::Unavailable(detail))) if self.several => {
                tracing::error!("database `{name}` unavailable: {detail}");
                Err(ToolError::Refused(format!(
                    "database `{name}` is unavailable right now; try again shortly"
                )))
            }
            other => other,
        }
    }

    /// A call refused before any pipeline took it, recorded like any other.
    async fn refuse(
        &self,
        call: &ToolCall,
        caller: Caller,
        database: Option<&String>,
        e: ToolError,
    ) -> Result<Outcome<ToolOutput>, ToolError> {
        let action = super::action_of(call, caller, database.filter(|_| self.several).cloned());
        let trail = Trail::new(&action, serde_json::json!({}));
        let record = trail.final_record(super::failure(&e, trail.elapsed_ms()));
        if let Err(w) = self.shared.audit.append(record, Durability::Written).await {
            tracing::error!("audit write failed: {w}");
        }
        Err(e)
    }

    /// Every database, as `list_tables` shows them.
    fn infos(&self) -> Vec<DatabaseInfo> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| DatabaseInfo {
                name: s.name.clone(),
                default: i == 0,
                available: s.ready().is_some(),
            })
            .collect()
    }

    /// The whole policy (every database's rules).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.shared.policy
    }

    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.shared.audit
    }

    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.shared.approvals
    }

    /// Said in the instructions: that this is the demo sandbox, or which databases there are.
    pub fn database_note(&self) -> Option<String> {
        if self.several {
            return Some(format!(
                "this pgwarden serves several databases: {} (the first is the default); every tool takes a \
                 `database` argument, and one call reaches one database",
                quoted(self.slots.iter().map(|s| &s.name))
            ));
        }
        self.note.clone()
    }
}
