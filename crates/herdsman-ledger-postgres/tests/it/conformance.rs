//! The PostgreSQL ledger passes the same conformance suite as the SQLite ledger, every check
//! on a fresh schema of one throwaway server, with leases driven by the suite's clock.

use std::sync::Arc;

use herdsman_ledger::conformance::{self, Backend};
use herdsman_ledger::{Clock, Ledger};
use herdsman_ledger_postgres::PostgresOptions;

use crate::common;

struct PostgresStore {
    url: String,
    options: PostgresOptions,
}

impl Backend for PostgresStore {
    fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Ledger> {
        Box::new(
            herdsman_ledger_postgres::PostgresLedger::connect(&self.url, self.options.clone())
                .unwrap()
                .with_clock(clock),
        )
    }
}

#[test]
fn postgres_passes_the_ledger_conformance_suite() {
    let server = crate::server_or_skip!("postgres_passes_the_ledger_conformance_suite");
    conformance::run_all(|| PostgresStore {
        url: server.url(),
        options: common::options("conformance"),
    });
}
