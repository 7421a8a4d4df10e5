//! The result byte cap: rows are charged by their raw cells, as Postgres sent them, before anything
//! is decoded, so a huge value is refused before it is turned into an even bigger JSON string.

use serde::Serialize;
use tokio_postgres::{Row, types::Type};

use super::{DbError, values::RawCell};

/// Why a result holds fewer rows than the query produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TruncatedBy {
    /// The row cap (`max_rows`).
    Rows,
    /// The byte cap (`max_result_bytes`).
    Bytes,
}

/// What is left of one call's result bytes.
#[derive(Debug, Clone, Copy)]
pub struct ByteBudget {
    limit: u64,
    used: u64,
}

impl ByteBudget {
    pub fn new(limit: u64) -> ByteBudget {
        ByteBudget { limit, used: 0 }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charges `row` and returns true, or returns false and charges nothing when the row would
    /// pass the cap.
    pub fn admit(&mut self, row: &Row) -> Result<bool, DbError> {
        let mut cost = 0u64;
        for (i, column) in row.columns().iter().enumerate() {
            let cell: RawCell = row.try_get(i).map_err(|e| DbError::Client(e.to_string()))?;
            cost = cost.saturating_add(cell_cost(column.type_(), &cell));
        }
        match self.used.checked_add(cost) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A cell's raw length; `bytea` counts double, since it is shown as hex.
fn cell_cost(ty: &Type, cell: &RawCell) -> u64 {
    let len = cell.0.map_or(0, |b| b.len() as u64);
    if *ty == Type::BYTEA { len.saturating_mul(2) } else { len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_counts_double_and_null_counts_nothing() {
        assert_eq!(cell_cost(&Type::TEXT, &RawCell(Some(b"abc"))), 3);
        assert_eq!(cell_cost(&Type::BYTEA, &RawCell(Some(b"abc"))), 6);
        assert_eq!(cell_cost(&Type::TEXT, &RawCell(None)), 0);
    }
}
