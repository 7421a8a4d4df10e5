//! Exports: `COPY (query) TO STDOUT` in a READ ONLY transaction, streamed chunk by chunk into a file
//! (constant memory whatever the size), hashed and counted on the way. It runs as the agent's
//! login, so masks apply exactly as for reads.

use std::time::Duration;

use futures_util::{StreamExt, pin_mut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Column, Database, DbError, read::begin_agent_read, session::Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180 CSV as PostgreSQL writes it (quoted when needed, NULL as an empty unquoted field).
    #[default]
    Csv,
    /// One JSON object per line (`to_json` of each row: numbers keep every digit, NULL is null).
    Jsonl,
}

impl ExportFormat {
    /// The name the `format` argument takes: `csv`, `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ExportSpec {
    pub format: ExportFormat,
    /// CSV header line with the column names.
    pub header: bool,
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ExportResult {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The `COPY … TO STDOUT` that carries `sql`, the agent's text exactly as classified, on lines of
/// its own; refused when the text would not stand on its own inside it (see `classify::embed`).
fn copy_text(sql: &str, spec: ExportSpec) -> Result<String, DbError> {
    let (prefix, suffix) = match spec.format {
        ExportFormat::Csv => (
            "COPY (\n".to_string(),
            format!(
                "\n) TO STDOUT WITH (FORMAT csv, HEADER {})",
                if spec.header { "true" } else { "false" }
            ),
        ),
        ExportFormat::Jsonl => (
            "COPY (SELECT pg_catalog.to_json(pgwarden_row)::text FROM (\n".to_string(),
            "\n) AS pgwarden_row) TO STDOUT".to_string(),
        ),
    };
    crate::classify::embed(&prefix, sql, &suffix).map_err(|e| DbError::Client(e.to_string()))
}

/// Rows between progress reports.
const PROGRESS_EVERY: u64 = 10_000;

impl Database {
    /// The result columns of `sql` (Parse/Describe only; nothing runs), as the agent's login.
    pub async fn describe_query(
        &self,
        sql: &str,
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Result<Vec<Column>, DbError> {
        let mut session = Session::open(self).await?;
        session
            .guarded(ct, timeout + Duration::from_secs(5), async |s: &mut Session| {
                let (_tx, statement) = begin_agent_read(s, timeout, sql).await?;
                Ok(Column::of(&statement))
            })
            .await
    }

    /// Streams the rows of `sql` into `file` (a new file; the caller puts it in place).
    pub async fn export(
        &self,
        sql: &str,
        spec: ExportSpec,
        file: std::fs::File,
        progress: &(dyn Fn(u64) + Send + Sync),
        ct: &CancellationToken,
    ) -> Result<ExportResult, DbError> {
        let mut session = Session::open(self).await?;
        let io = |e: std::io::Error| DbError::Client(format!("writing the export file: {e}"));
        session
            .guarded(
                ct,
                spec.statement_timeout + Duration::from_secs(5),
                async |s: &mut Session| {
                    let (tx, _statement) = begin_agent_read(s, spec.statement_timeout, sql).await?;
                    let copy = copy_text(sql, spec)?;
                    let stream = tx.copy_out(copy.as_str()).await.map_err(DbError::from_pg)?;
                    pin_mut!(stream);
                    // Created owner-only, beneath the export directory's handle (see `export_path`).
                    let out = tokio::fs::File::from_std(file);
                    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, out);
                    let mut hasher = Sha256::new();
                    let mut counter = RowCounter::new(spec.format);
                    let mut unescape = Unescape::default();
                    let mut bytes = 0u64;
                    let mut reported = 0u64;
                    let mut buf = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(DbError::from_pg)?;
                        let data: &[u8] = match spec.format {
                            ExportFormat::Csv => &chunk,
                            ExportFormat::Jsonl => {
                                buf.clear();
                                unescape.push(&chunk, &mut buf);
                                &buf
                            }
                        };
                        counter.push(data);
                        hasher.update(data);
                        bytes += data.len() as u64;
                        out.write_all(data).await.map_err(io)?;
                        if counter.rows >= reported + PROGRESS_EVERY {
                            reported = counter.rows;
                            progress(counter.rows(spec.header));
                        }
                    }
                    out.flush().await.map_err(io)?;
                    out.get_ref().sync_all().await.map_err(io)?;
                    Ok(ExportResult {
                        rows: counter.rows(spec.header),
                        bytes,
                        sha256: hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
                    })
                },
            )
            .await
    }
}

/// Counts records: newlines outside CSV quotes (a quoted field may hold newlines; `""` is a quote).
struct RowCounter {
    csv: bool,
    in_quotes: bool,
    rows: u64,
}

impl RowCounter {
    fn new(format: ExportFormat) -> RowCounter {
        RowCounter {
            csv: format == ExportFormat::Csv,
            in_quotes: false,
            rows: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                b'"' if self.csv => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.rows += 1,
                _ => {}
            }
        }
    }

    /// Data rows, not counting a CSV header line.
    fn rows(&self, header: bool) -> u64 {
        if self.csv && header {
            self.rows.saturating_sub(1)
        } else {
            self.rows
        }
    }
}

/// COPY's text format escapes `\` (and control characters, which JSON text never holds raw).
#[derive(Default)]
struct Unescape {
    pending: bool,
}

impl Unescape {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            if self.pending {
                self.pending = false;
                out.push(match b {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'f' => 12,
                    b'v' => 11,
                    other => other,
                });
            } else if b == b'\\' {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_counted_outside_quotes_and_copy_text_is_unescaped_across_chunks() {
        let mut c = RowCounter::new(ExportFormat::Csv);
        c.push(b"a,b\n1,\"x\n\"\"y\"\"\"\n");
        c.push(b"2,\n");
        assert_eq!(c.rows(true), 2);
        let mut u = Unescape::default();
        let mut out = Vec::new();
        u.push(br#"{"a":"x\"#, &mut out);
        u.push(br#"\"}"#, &mut out);
        assert_eq!(out, br#"{"a":"x\"}"#);
    }
}
